//! Fuzzing reception past the signature: structured and random envelopes, signed with the
//! Jobcenter's real key (the one the Jugendamt's directory pins), driven through the
//! Jugendamt node's real reception path — `Node::receive_batch` and `Node::receive` against
//! a real, encrypted sled store — in process, without servers.
//!
//! Two properties: `structured_envelopes` (headers and bodies of every kind with valid and
//! invalid field values, a pool of recorded consents so that case messages are accepted
//! too) and `random_bytes_signed_with_the_pinned_key` (random header and payload bytes, and
//! damaged encodings of structured envelopes). Each case is a batch of 1–8 envelopes
//! (sometimes repeating one), delivered as one batch or one by one.
//!
//! The oracle does not know the reception rules. Whatever the node decides, for every
//! envelope:
//! - no panic;
//! - the answer is a receipt that verifies under the Jugendamt's pinned key and names this
//!   envelope, or a refusal with a reason code whose gRPC status carries that code and is
//!   not INTERNAL (a peer's bad input is never the node's internal error), nor "retry" (the
//!   store is healthy, so nothing may fail to be stored);
//! - stored iff accepted: the inbox records that appeared are exactly the newly accepted
//!   envelopes (with the receipts that were answered); a refused envelope leaves the inbox
//!   record of its message id and every consent it names as they were;
//! - an envelope accepted before (earlier in the batch, or in an earlier delivery) is
//!   answered with the identical receipt.
//!
//! Run longer (see docs/FUZZING.md; about 50 minutes on one core):
//! `PROPTEST_CASES=1000000 cargo test --release -p kurzdraht-node --test reception_fuzz -- --nocapture --test-threads=1`

use kurzdraht_envelope::{
    envelope_hash, verify_receipt, ExpectedReceipt, SigningKey, VerifyingKey,
};
use kurzdraht_ledger::{InboxRecord, Ledger, StoredConsent, DELIVERY_LANES};
use kurzdraht_node::{clock, config::NodeConfig, error::reason_of, pki, Node, NodeError};
use kurzdraht_proto::v1::{
    message_body::Body, Address, CaseReference, CertificationRequest, ConsentForm, ConsentGiver,
    ConsentNotice, ConsentRecord, ConsentWithdrawal, ConsentWithdrawalRecord, DataCategory,
    EnvelopeHeader, LegalBasis, MessageBody, MessageKind, MoveOutCertification, MoveOutDecision,
    Purpose, QualificationReferral, RecordConsentRequest, ReferralResponse, SignedEnvelope,
    SignedReceipt, Subject,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use prost::Message;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const JN: &str = "jugendamt-norderstedt";

/// Cases per store: a long run starts a fresh store now and then, so that one store does
/// not grow without bound.
const CASES_PER_STORE: u32 = 2_000;
/// Consents recorded at the Jobcenter and replicated to the Jugendamt for each store.
const POOL: usize = 6;
/// How many envelopes and message ids of earlier cases are kept for re-delivery and reuse.
const RING: usize = 64;
/// Default number of cases of each property (`PROPTEST_CASES` overrides it).
const DEFAULT_CASES: u32 = 512;
const DAY_MS: i64 = 24 * 3600 * 1000;

// ---------------------------------------------------------------------------------------
// What a case is made of. Everything that depends on the clock or on the store (times near
// now, ids of recorded consents, earlier envelopes) is chosen here as a reference and made
// concrete when the case runs.
// ---------------------------------------------------------------------------------------

/// A message id.
#[derive(Debug, Clone)]
enum IdSpec {
    /// A new UUIDv7 (these random bits, the current time).
    Fresh([u8; 10]),
    /// A message id used before (in an earlier case or earlier in this batch).
    Reuse(usize),
    /// A random UUID of version 4.
    V4([u8; 16]),
    /// A new UUIDv7 in upper case.
    Upper([u8; 10]),
    Text(String),
}

/// A consent id.
#[derive(Debug, Clone)]
enum ConsentRef {
    /// The consent of the pool's slot.
    Pool(usize),
    /// The consent of a notice earlier in this batch (whether or not it was accepted).
    InBatch(usize),
    /// A UUIDv7 that names no consent.
    Fresh([u8; 10]),
    Text(String),
    Empty,
}

/// The consent id a header cites.
#[derive(Debug, Clone)]
enum HeaderConsent {
    /// For a notice or withdrawal the consent in its body; for a case message the consent
    /// of its subject (of its pool slot, or of the notice it was taken from; none for other
    /// subjects).
    Natural,
    Other(ConsentRef),
}

/// A point in time.
#[derive(Debug, Clone)]
enum TimeSpec {
    /// Now plus this many milliseconds.
    Near(i64),
    /// The oldest time the replay window admits, plus this many milliseconds.
    WindowEdge(i64),
    /// The latest time the clock skew admits, plus this many milliseconds.
    SkewEdge(i64),
    Any(i64),
}

#[derive(Debug, Clone)]
enum Agency {
    Jc,
    Ja,
    Jn,
    Text(String),
}

/// A date of birth: an age in whole years (and a day of that year), or any text.
#[derive(Debug, Clone)]
enum DateSpec {
    Age { years: i32, day: u16 },
    Text(String),
}

#[derive(Debug, Clone)]
enum SubjectSpec {
    /// The person of a pool slot, perhaps spelled in other case and spacing, perhaps with an
    /// address and case references.
    Pool {
        slot: usize,
        respell: bool,
        address: Option<Address>,
        references: Vec<CaseReference>,
    },
    /// The person of a notice earlier in this batch (of none: a pool person).
    Cited(usize),
    Given {
        given_name: String,
        family_name: String,
        date_of_birth: DateSpec,
        address: Option<Address>,
        references: Vec<CaseReference>,
    },
    Missing,
}

#[derive(Debug, Clone)]
enum NoticeSpec {
    /// The record of a pool slot again, in a new envelope.
    Repeat(usize),
    New(Box<NewConsent>),
    /// A notice without a record.
    Missing,
}

#[derive(Debug, Clone)]
enum NewConsentId {
    Fresh([u8; 10]),
    /// The id of a pool consent, with another record.
    Pool(usize),
    Text(String),
}

#[derive(Debug, Clone)]
struct NewConsent {
    id: NewConsentId,
    subject: SubjectSpec,
    given_by: i32,
    guardian_name: String,
    recording_agency: Agency,
    recipients: Vec<Agency>,
    purposes: Vec<i32>,
    categories: Vec<i32>,
    valid_from: TimeSpec,
    valid_until: TimeSpec,
    legal_basis: i32,
    form: i32,
    evidence_sha256: Vec<u8>,
    evidence_reference: String,
    recorded_by: String,
    recorded_at: TimeSpec,
    supersedes: ConsentRef,
}

#[derive(Debug, Clone)]
struct WithdrawalSpec {
    /// `None`: a withdrawal message without a record.
    target: Option<ConsentRef>,
    withdrawn_at: TimeSpec,
    recorded_by: String,
    manner: String,
}

#[derive(Debug, Clone)]
enum BodySpec {
    /// A case message; its subject is filled in from `subject`.
    Case {
        body: Box<Body>,
        subject: SubjectSpec,
    },
    Notice(NoticeSpec),
    Withdrawal(WithdrawalSpec),
    Empty,
}

/// What becomes of the encoded payload before the header's hash is taken.
#[derive(Debug, Clone)]
enum PayloadSpec {
    Honest,
    /// An unknown field appended.
    UnknownField(u32, Vec<u8>),
    /// Damaged bytes (with their hash in the header).
    Damaged(Vec<Damage>),
    /// Damaged after the hash was taken.
    StaleHash(Vec<Damage>),
}

#[derive(Debug, Clone)]
struct Spec {
    id: IdSpec,
    /// `None`: the kind of the body.
    kind: Option<i32>,
    sender: Agency,
    signer: Agency,
    recipient: Agency,
    created: TimeSpec,
    consent: HeaderConsent,
    in_reply_to: Option<IdSpec>,
    body: BodySpec,
    payload: PayloadSpec,
    /// An unknown field appended to the encoded header.
    header_tail: Option<(u32, Vec<u8>)>,
}

/// A damage to encoded bytes: flip a bit, cut off, or insert bytes (positions wrap).
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

#[derive(Debug, Clone)]
enum Item {
    Structured(Box<Spec>),
    /// Random header and payload bytes.
    Random {
        header: Vec<u8>,
        payload: Vec<u8>,
    },
    /// A structured envelope whose encoded header or payload (or both) was damaged before signing;
    /// `rehash`: the header carries the hash of the damaged payload.
    Damaged {
        spec: Box<Spec>,
        header: Vec<Damage>,
        payload: Vec<Damage>,
        rehash: bool,
    },
    /// An earlier envelope of this batch again (the first item: an envelope of an earlier
    /// case).
    Again(usize),
    /// An envelope accepted in an earlier case, delivered again.
    Redeliver(usize),
}

#[derive(Debug, Clone)]
struct Case {
    items: Vec<Item>,
    /// Delivered one by one (`receive`) rather than as one batch (`receive_batch`).
    one_by_one: bool,
}

// ---------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------

/// Any characters, control characters and unusual scripts included.
fn odd_text() -> BoxedStrategy<String> {
    vec(any::<char>(), 0..64)
        .prop_map(String::from_iter)
        .boxed()
}

/// Text around the field limits (200 and 2,000 characters) and up to 5 KiB.
fn long_text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z ]{195,205}",
        "[a-zäöü .]{1990,2010}",
        "[ -~]{2000,5120}",
        vec(any::<char>(), 500..1300).prop_map(String::from_iter),
    ]
    .boxed()
}

/// A name: mostly a plausible one.
fn name() -> BoxedStrategy<String> {
    prop_oneof![
        30 => "[A-ZÄÖÜ][a-zäöüß]{1,12}( [A-Z][a-z]{1,10})?",
        1 => Just(String::new()),
        1 => "[ \t\n]{1,3}",
        1 => odd_text(),
        1 => long_text(),
    ]
    .boxed()
}

/// A text field: mostly plausible text.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        30 => "[A-Za-z0-9äöüÄÖÜß .,;:§()/-]{1,120}(\n[a-z ]{0,40})?",
        1 => Just(String::new()),
        1 => odd_text(),
        2 => long_text(),
    ]
    .boxed()
}

/// An optional text field: mostly empty or plausible.
fn optional_text() -> BoxedStrategy<String> {
    prop_oneof![4 => Just(String::new()), 4 => text()].boxed()
}

/// A date field: mostly a valid date, else something that looks like one or does not.
fn date() -> BoxedStrategy<String> {
    prop_oneof![
        30 => (2015i32..2035, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        1 => (any::<i16>(), 0u8..20, 0u8..40).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        1 => prop_oneof![
            Just("2026-02-30"), Just("2026-02-29"), Just("01.03.2004"), Just("2004-3-1"),
            Just(" 2004-03-01 "), Just("+2004-03-01"), Just("-0001-01-01"), Just("0000-01-01"),
            Just("9999-12-31"), Just("2004-03-01T00:00:00Z"), Just("２００４-０３-０１"),
        ].prop_map(String::from),
        1 => odd_text(),
    ]
    .boxed()
}

fn optional_date() -> BoxedStrategy<String> {
    prop_oneof![1 => Just(String::new()), 2 => date()].boxed()
}

/// An enum field with known values `1..=max`: mostly a known value, else 0, the next
/// unknown one, or any.
fn enum_value(max: i32) -> BoxedStrategy<i32> {
    prop_oneof![
        24 => 1..=max,
        2 => Just(0),
        1 => Just(max + 1),
        1 => prop_oneof![Just(-1), Just(i32::MIN), Just(i32::MAX), any::<i32>()],
    ]
    .boxed()
}

fn uuid_v7(ms: i64, rand: &[u8; 10]) -> String {
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or(0), rand)
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn id_spec() -> BoxedStrategy<IdSpec> {
    prop_oneof![
        40 => any::<[u8; 10]>().prop_map(IdSpec::Fresh),
        1 => any::<usize>().prop_map(IdSpec::Reuse),
        1 => any::<[u8; 16]>().prop_map(IdSpec::V4),
        1 => any::<[u8; 10]>().prop_map(IdSpec::Upper),
        1 => prop_oneof![odd_text(), long_text()].prop_map(IdSpec::Text),
    ]
    .boxed()
}

fn consent_ref() -> BoxedStrategy<ConsentRef> {
    prop_oneof![
        4 => any::<usize>().prop_map(ConsentRef::Pool),
        4 => any::<usize>().prop_map(ConsentRef::InBatch),
        2 => any::<[u8; 10]>().prop_map(ConsentRef::Fresh),
        1 => odd_text().prop_map(ConsentRef::Text),
        1 => Just(ConsentRef::Empty),
    ]
    .boxed()
}

/// A time near now, at the edges of what reception admits, or any time at all.
fn time_spec() -> BoxedStrategy<TimeSpec> {
    prop_oneof![
        20 => (-3_600_000i64..60_000).prop_map(TimeSpec::Near),
        4 => (-7 * DAY_MS..240_000).prop_map(TimeSpec::Near),
        1 => (-5_000i64..5_000).prop_map(TimeSpec::WindowEdge),
        1 => (-5_000i64..5_000).prop_map(TimeSpec::SkewEdge),
        1 => prop_oneof![
            4 => any::<i64>(),
            1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1), Just(0)],
            1 => i64::MIN..i64::MIN + 1_000_000,
            1 => i64::MAX - 1_000_000..=i64::MAX,
        ].prop_map(TimeSpec::Any),
    ]
    .boxed()
}

/// Mostly `usual`, else another agency or any text.
fn agency(usual: Agency) -> BoxedStrategy<Agency> {
    prop_oneof![
        40 => Just(usual),
        1 => Just(Agency::Jc),
        1 => Just(Agency::Ja),
        1 => Just(Agency::Jn),
        1 => prop_oneof![Just(String::new()), odd_text(), Just(format!("{JA} "))].prop_map(Agency::Text),
    ]
    .boxed()
}

fn address() -> BoxedStrategy<Option<Address>> {
    proptest::option::weighted(
        0.2,
        (
            name(),
            prop_oneof![12 => "[0-9]{5}", 1 => "[0-9]{17}"],
            name(),
        )
            .prop_map(|(street, postal_code, city)| Address {
                street,
                postal_code,
                city,
            }),
    )
    .boxed()
}

fn references() -> BoxedStrategy<Vec<CaseReference>> {
    prop_oneof![
        8 => Just(Vec::new()),
        4 => vec((name(), name()), 1..3),
        1 => vec((name(), name()), 8..11),
    ]
    .prop_map(|refs| {
        refs.into_iter()
            .map(|(agency, reference)| CaseReference { agency, reference })
            .collect()
    })
    .boxed()
}

fn subject_spec() -> BoxedStrategy<SubjectSpec> {
    let given = (
        name(),
        name(),
        prop_oneof![
            8 => (10i32..40, 0u16..366).prop_map(|(years, day)| DateSpec::Age { years, day }),
            1 => date().prop_map(DateSpec::Text),
        ],
        address(),
        references(),
    )
        .prop_map(
            |(given_name, family_name, date_of_birth, address, references)| SubjectSpec::Given {
                given_name,
                family_name,
                date_of_birth,
                address,
                references,
            },
        );
    prop_oneof![
        4 => any::<usize>().prop_map(SubjectSpec::Cited),
        12 => (any::<usize>(), any::<bool>(), address(), references()).prop_map(
            |(slot, respell, address, references)| SubjectSpec::Pool {
                slot,
                respell,
                address,
                references,
            }
        ),
        2 => given,
        1 => Just(SubjectSpec::Missing),
    ]
    .boxed()
}

/// The body of a case message of any kind (its subject left empty).
fn case_body() -> BoxedStrategy<Body> {
    prop_oneof![
        3 => (text(), optional_date(), name()).prop_map(|(reason, respond_by, caseworker)| {
            Body::CertificationRequest(CertificationRequest {
                subject: None,
                reason,
                respond_by,
                caseworker,
            })
        }),
        3 => (enum_value(3), prop_oneof![Just(0), enum_value(3)], date(), optional_date(), name())
            .prop_map(|(outcome, ground, decision_date, tenancy_contract_date, caseworker)| {
                Body::MoveOutDecision(MoveOutDecision {
                    subject: None,
                    outcome,
                    ground,
                    decision_date,
                    tenancy_contract_date,
                    caseworker,
                })
            }),
        3 => (text(), name(), name(), optional_date()).prop_map(
            |(reason, measure, contact, respond_by)| {
                Body::QualificationReferral(QualificationReferral {
                    subject: None,
                    reason,
                    measure,
                    contact,
                    respond_by,
                })
            }
        ),
        1 => (enum_value(3), enum_value(3), text(), date(), name(), optional_text()).prop_map(
            |(outcome, ground, statement, interview_date, issuing_caseworker, health_note)| {
                Body::MoveOutCertification(MoveOutCertification {
                    subject: None,
                    outcome,
                    ground,
                    statement,
                    interview_date,
                    issuing_caseworker,
                    health_note,
                })
            }
        ),
        1 => (enum_value(4), optional_text(), name()).prop_map(|(outcome, note, caseworker)| {
            Body::ReferralResponse(ReferralResponse {
                subject: None,
                outcome,
                note,
                caseworker,
            })
        }),
    ]
    .boxed()
}

/// Every data category, as a valid consent names them.
fn all_categories() -> Vec<i32> {
    (1..=8).collect()
}

fn new_consent() -> BoxedStrategy<NewConsent> {
    let id = prop_oneof![
        20 => any::<[u8; 10]>().prop_map(NewConsentId::Fresh),
        1 => any::<usize>().prop_map(NewConsentId::Pool),
        1 => odd_text().prop_map(NewConsentId::Text),
    ];
    let who = (
        subject_spec(),
        prop_oneof![12 => Just(ConsentGiver::Person as i32), 1 => enum_value(2)],
        optional_text(),
        agency(Agency::Jc),
        prop_oneof![
            12 => Just(vec![Agency::Ja]),
            2 => Just(vec![Agency::Ja, Agency::Jn]),
            1 => vec(agency(Agency::Ja), 0..4),
        ],
    );
    let what = (
        prop_oneof![
            8 => Just(vec![Purpose::U25MoveOut as i32, Purpose::QualificationMeasure as i32]),
            1 => Just(vec![Purpose::U25MoveOut as i32]),
            1 => Just(vec![Purpose::QualificationMeasure as i32]),
            1 => vec(enum_value(2), 0..3),
        ],
        prop_oneof![
            8 => Just(all_categories()),
            // identity only: case messages carry more
            2 => Just(vec![DataCategory::Identity as i32]),
            2 => vec(enum_value(8), 0..9),
        ],
        prop_oneof![
            12 => Just(LegalBasis::ExplicitConsentGdpr92A as i32),
            1 => enum_value(2),
        ],
        enum_value(2),
        prop_oneof![12 => Just(vec![0x5a; 32]), 1 => vec(any::<u8>(), 0..40)],
    );
    let when = (
        prop_oneof![
            6 => (-30 * DAY_MS..0).prop_map(TimeSpec::Near),
            1 => (60_000..DAY_MS).prop_map(TimeSpec::Near),
            1 => time_spec(),
        ],
        prop_oneof![
            6 => (DAY_MS..400 * DAY_MS).prop_map(TimeSpec::Near),
            1 => (-DAY_MS..-60_000).prop_map(TimeSpec::Near),
            1 => time_spec(),
        ],
        time_spec(),
    );
    let paperwork = (
        text(),
        name(),
        prop_oneof![12 => Just(ConsentRef::Empty), 1 => consent_ref()],
    );
    (id, who, what, when, paperwork)
        .prop_map(
            |(
                id,
                (subject, given_by, guardian_name, recording_agency, recipients),
                (purposes, categories, legal_basis, form, evidence_sha256),
                (valid_from, valid_until, recorded_at),
                (evidence_reference, recorded_by, supersedes),
            )| NewConsent {
                id,
                subject,
                given_by,
                guardian_name,
                recording_agency,
                recipients,
                purposes,
                categories,
                valid_from,
                valid_until,
                legal_basis,
                form,
                evidence_sha256,
                evidence_reference,
                recorded_by,
                recorded_at,
                supersedes,
            },
        )
        .boxed()
}

fn body_spec() -> BoxedStrategy<BodySpec> {
    let notice = prop_oneof![
        8 => new_consent().prop_map(|c| NoticeSpec::New(Box::new(c))),
        1 => any::<usize>().prop_map(NoticeSpec::Repeat),
        1 => Just(NoticeSpec::Missing),
    ];
    let withdrawal = (
        prop_oneof![
            12 => prop_oneof![
                6 => any::<usize>().prop_map(ConsentRef::InBatch),
                1 => consent_ref(),
            ].prop_map(Some),
            1 => Just(None),
        ],
        time_spec(),
        name(),
        optional_text(),
    )
        .prop_map(
            |(target, withdrawn_at, recorded_by, manner)| WithdrawalSpec {
                target,
                withdrawn_at,
                recorded_by,
                manner,
            },
        );
    prop_oneof![
        12 => (case_body(), subject_spec()).prop_map(|(body, subject)| BodySpec::Case { body: Box::new(body), subject }),
        4 => notice.prop_map(BodySpec::Notice),
        2 => withdrawal.prop_map(BodySpec::Withdrawal),
        1 => Just(BodySpec::Empty),
    ]
    .boxed()
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

fn unknown_field() -> BoxedStrategy<(u32, Vec<u8>)> {
    (9u32..100_000, vec(any::<u8>(), 0..64)).boxed()
}

fn spec() -> BoxedStrategy<Spec> {
    let header = (
        id_spec(),
        prop_oneof![40 => Just(None), 1 => enum_value(8).prop_map(Some)],
        agency(Agency::Jc),
        prop_oneof![80 => Just(Agency::Jc), 1 => agency(Agency::Jn)],
        agency(Agency::Ja),
        time_spec(),
    );
    let rest = (
        prop_oneof![
            30 => Just(HeaderConsent::Natural),
            1 => consent_ref().prop_map(HeaderConsent::Other),
        ],
        prop_oneof![12 => Just(None), 1 => id_spec().prop_map(Some)],
        body_spec(),
        prop_oneof![
            40 => Just(PayloadSpec::Honest),
            1 => unknown_field().prop_map(|(f, b)| PayloadSpec::UnknownField(f, b)),
            1 => damage().prop_map(PayloadSpec::Damaged),
            1 => damage().prop_map(PayloadSpec::StaleHash),
        ],
        prop_oneof![40 => Just(None), 1 => unknown_field().prop_map(Some)],
    );
    (header, rest)
        .prop_map(
            |(
                (id, kind, sender, signer, recipient, created),
                (consent, in_reply_to, body, payload, header_tail),
            )| Spec {
                id,
                kind,
                sender,
                signer,
                recipient,
                created,
                consent,
                in_reply_to,
                body,
                payload,
                header_tail,
            },
        )
        .boxed()
}

/// Cases of structured envelopes, with repeats within the batch and re-deliveries.
fn structured_case() -> BoxedStrategy<Case> {
    let item = prop_oneof![
        20 => spec().prop_map(|s| Item::Structured(Box::new(s))),
        2 => any::<usize>().prop_map(Item::Again),
        1 => any::<usize>().prop_map(Item::Redeliver),
    ];
    (
        vec(item, 1..=8),
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(items, one_by_one)| Case { items, one_by_one })
        .boxed()
}

/// Cases of random bytes and damaged encodings, signed with the key.
fn random_case() -> BoxedStrategy<Case> {
    let item = prop_oneof![
        4 => (vec(any::<u8>(), 0..=4200), vec(any::<u8>(), 0..2048))
            .prop_map(|(header, payload)| Item::Random { header, payload }),
        6 => (spec(), prop_oneof![Just(Vec::new()), damage()], prop_oneof![Just(Vec::new()), damage()], any::<bool>()).prop_map(
            |(spec, header, payload, rehash)| Item::Damaged {
                spec: Box::new(spec),
                header,
                payload,
                rehash,
            }
        ),
        1 => any::<usize>().prop_map(Item::Again),
    ];
    (vec(item, 1..=8), any::<bool>())
        .prop_map(|(items, one_by_one)| Case { items, one_by_one })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// The federation, the nodes and the stores.
// ---------------------------------------------------------------------------------------

/// A directory on /dev/shm if there is one (fsync is cheap there), else the default.
fn scratch_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// A consent of the pool: recorded at the Jobcenter, replicated to the Jugendamt.
struct Slot {
    record: ConsentRecord,
}

/// The stores of the current generation: the Jugendamt under test, and the Jobcenter whose
/// node records the pool's consents (as its IT system would) and seals their notices.
struct Store {
    ja: Node,
    jc: Node,
    slots: Vec<Slot>,
    /// The highest inbox sequence number seen.
    last_seq: u64,
    cases: u32,
    // Dropped last: the nodes above close their stores first.
    _dir: TempDir,
}

#[derive(Default)]
struct Stats {
    cases: u64,
    one_by_one: u64,
    envelopes: u64,
    accepted: u64,
    /// Envelopes that reached the node's own decisions (accepted, or refused for a reason
    /// that is not the envelope's encoding or signature).
    decided: u64,
    accepted_by_kind: BTreeMap<String, u64>,
    refused_by_reason: BTreeMap<&'static str, u64>,
    repeats_answered: u64,
    stores: u64,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    ja_config: NodeConfig,
    jc_config: NodeConfig,
    jc_key: ed25519_dalek::SigningKey,
    ja_keys: Vec<VerifyingKey>,
    window_ms: i64,
    skew_ms: i64,
    store: Option<Store>,
    /// Envelopes accepted in earlier cases, for re-delivery.
    history: Vec<SignedEnvelope>,
    /// Message ids of earlier cases, for reuse.
    ids: Vec<String>,
    stats: Stats,
    // Dropped last.
    _pki: TempDir,
}

fn push_ring<T>(ring: &mut Vec<T>, value: T) {
    if ring.len() >= RING {
        ring.remove(0);
    }
    ring.push(value);
}

fn pick<T>(items: &[T], k: usize) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(k % items.len())
    }
}

/// The person of pool slot `k`: between 16 and 21 years old this year.
fn pool_person(k: usize, year: i32) -> Subject {
    const PERSONS: [(&str, &str, i32, &str); POOL] = [
        ("Lena", "Muster", 18, "03-01"),
        ("Jonas", "Petersen", 19, "11-30"),
        ("Ayşe", "Yılmaz", 20, "12-24"),
        ("Mia-Sophie", "Hansen", 16, "02-28"),
        ("Ole", "Brandt", 21, "01-01"),
        ("Émile", "Dubois Schmidt", 17, "06-15"),
    ];
    let (given, family, age, day) = PERSONS[k % POOL];
    Subject {
        given_name: given.into(),
        family_name: family.into(),
        date_of_birth: format!("{:04}-{day}", year - age),
        ..Default::default()
    }
}

impl Fixture {
    fn new() -> Self {
        let pki_dir = scratch_dir();
        let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // No servers run: the addresses only fill the configuration.
        let specs = pki::segeberg([(addr(1), addr(2)), (addr(3), addr(4)), (addr(5), addr(6))]);
        let files = pki::init(pki_dir.path(), &specs).expect("the federation's PKI");
        let config = |id: &str| {
            let f = files.iter().find(|f| f.id == id).expect("agency files");
            NodeConfig::load(&f.node_config).expect("node.toml")
        };
        let ja_config = config(JA);
        let jc_config = config(JC);
        // The Jobcenter's signing key, as pinned in the Jugendamt's directory.
        let jc_signing = SigningKey::from_hex(
            &std::fs::read_to_string(pki_dir.path().join(JC).join("signing.key"))
                .expect("the Jobcenter's signing key"),
        )
        .expect("a signing key");
        let pinned = &ja_config
            .directory
            .get(JC)
            .expect("JC in the directory")
            .active_keys();
        assert!(pinned.contains(&jc_signing.verifying_key()));
        let seed: [u8; 32] = hex::decode(jc_signing.to_hex().trim())
            .expect("hex seed")
            .try_into()
            .expect("32-byte seed");
        let ja_keys = jc_config
            .directory
            .get(JA)
            .expect("JA in the directory")
            .active_keys()
            .to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Self {
            rt,
            window_ms: ja_config.limits.replay_window.as_millis() as i64,
            skew_ms: ja_config.limits.clock_skew.as_millis() as i64,
            ja_config,
            jc_config,
            jc_key: ed25519_dalek::SigningKey::from_bytes(&seed),
            ja_keys,
            store: None,
            history: Vec::new(),
            ids: Vec::new(),
            stats: Stats::default(),
            _pki: pki_dir,
        }
    }

    /// Opens both nodes on fresh stores and fills the consent pool.
    fn open_store(&mut self) {
        self.store = None;
        self.history.clear();
        let dir = scratch_dir();
        let mut ja = self.ja_config.clone();
        ja.data_dir = dir.path().join("ja");
        let mut jc = self.jc_config.clone();
        jc.data_dir = dir.path().join("jc");
        let mut store = Store {
            ja: Node::open(&ja).expect("the Jugendamt's node"),
            jc: Node::open(&jc).expect("the Jobcenter's node"),
            slots: Vec::new(),
            last_seq: 0,
            cases: 0,
            _dir: dir,
        };
        for k in 0..POOL {
            let slot = self.record_slot(&store, k);
            store.slots.push(slot);
        }
        store.last_seq = last_seq(store.ja.ledger(), 0);
        self.store = Some(store);
        self.stats.stores += 1;
    }

    /// Records the consent of pool slot `k` at the Jobcenter and delivers its notice, as
    /// the Jobcenter's node sealed it, to the Jugendamt.
    fn record_slot(&self, store: &Store, k: usize) -> Slot {
        let year = clock::date_of_ms(clock::now_ms()).expect("today").year();
        let request = RecordConsentRequest {
            subject: Some(pool_person(k, year)),
            categories: all_categories(),
            legal_basis: LegalBasis::ExplicitConsentGdpr92A as i32,
            form: ConsentForm::Written as i32,
            evidence_sha256: vec![0x5a; 32],
            given_by: ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![
                Purpose::U25MoveOut as i32,
                Purpose::QualificationMeasure as i32,
            ],
            evidence_reference: format!("JC-SE/Einwilligung/fuzz/{k}"),
            recorded_by: "Frau Berg".into(),
            ..Default::default()
        };
        let response = self
            .rt
            .block_on(
                store
                    .jc
                    .submission()
                    .record_consent("jobcenter-segeberg-it", request),
            )
            .expect("the Jobcenter records a pool consent");
        let record = response.consent.expect("the recorded consent");
        let notice_id = response
            .notice_message_ids
            .first()
            .expect("a notice to the Jugendamt");
        let notice = (0..DELIVERY_LANES)
            .flat_map(|lane| {
                store
                    .jc
                    .ledger()
                    .outbox_batch(JA, lane, usize::MAX)
                    .expect("the Jobcenter's outbox")
            })
            .find(|e| &e.message_id == notice_id)
            .and_then(|e| e.envelope)
            .expect("the notice in the Jobcenter's outbox");
        self.rt
            .block_on(store.ja.reception().receive(JC, notice))
            .expect("the Jugendamt accepts the pool consent's notice");
        Slot { record }
    }

    /// Replaces the pool consents that were withdrawn or superseded.
    fn refresh_pool(&mut self, touched: &HashSet<String>) {
        let Some(mut store) = self.store.take() else {
            return;
        };
        for k in 0..POOL {
            if !touched.contains(&store.slots[k].record.consent_id) {
                continue;
            }
            let held = store
                .ja
                .ledger()
                .consent(&store.slots[k].record.consent_id)
                .expect("read a consent");
            let spent = held.is_none_or(|c| c.withdrawal.is_some() || !c.superseded_by.is_empty());
            if spent {
                store.slots[k] = self.record_slot(&store, k);
            }
        }
        store.last_seq = last_seq(store.ja.ledger(), store.last_seq);
        self.store = Some(store);
    }

    fn run_case(&mut self, case: &Case) -> Result<(), TestCaseError> {
        if self
            .store
            .as_ref()
            .is_none_or(|s| s.cases >= CASES_PER_STORE)
        {
            self.open_store();
        }
        let now = clock::now_ms();
        let envelopes = self.materialize(case, now);
        let store = self.store.as_mut().expect("a store");
        store.cases += 1;
        // From where this case starts (a failed case, while shrinking, may have stopped
        // checking before it looked at the inbox).
        store.last_seq = last_seq(store.ja.ledger(), store.last_seq);
        let ledger = store.ja.ledger();
        let before = Snapshot::take(ledger, &envelopes)?;
        let answers = if case.one_by_one {
            envelopes
                .iter()
                .map(|e| {
                    self.rt
                        .block_on(store.ja.reception().receive(JC, e.clone()))
                })
                .collect()
        } else {
            self.rt
                .block_on(store.ja.reception().receive_batch(JC, envelopes.clone()))
        };
        let verdict = check(
            &self.ja_keys,
            ledger,
            &envelopes,
            answers,
            &before,
            now - self.window_ms + 60_000,
            &mut store.last_seq,
            &mut self.stats,
        )?;
        self.stats.cases += 1;
        self.stats.one_by_one += u64::from(case.one_by_one);
        for env in verdict.accepted {
            push_ring(&mut self.history, env);
        }
        for id in verdict.ids {
            push_ring(&mut self.ids, id);
        }
        if !verdict.touched.is_empty() {
            self.refresh_pool(&verdict.touched);
        }
        Ok(())
    }

    /// Makes the case's envelopes concrete.
    fn materialize(&self, case: &Case, now: i64) -> Vec<SignedEnvelope> {
        let store = self.store.as_ref().expect("a store");
        let mut cx = Cx {
            now,
            year: clock::date_of_ms(now).expect("today").year(),
            window_ms: self.window_ms,
            skew_ms: self.skew_ms,
            slots: &store.slots,
            ids: self.ids.clone(),
            batch_consents: Vec::new(),
        };
        let mut out: Vec<SignedEnvelope> = Vec::with_capacity(case.items.len());
        for item in &case.items {
            let env = match item {
                Item::Structured(spec) => {
                    let (header, payload, signer) = cx.parts(spec);
                    self.sign(header.encode_to_vec(), payload, signer)
                }
                Item::Random { header, payload } => {
                    self.sign(header.clone(), payload.clone(), JC.into())
                }
                Item::Damaged {
                    spec,
                    header: header_damage,
                    payload: payload_damage,
                    rehash,
                } => {
                    let (mut header, payload, signer) = cx.parts(spec);
                    let payload = damaged(payload, payload_damage);
                    if *rehash {
                        header.payload_sha256 = Sha256::digest(&payload).to_vec();
                    }
                    self.sign(
                        damaged(header.encode_to_vec(), header_damage),
                        payload,
                        signer,
                    )
                }
                Item::Again(k) if !out.is_empty() => out[k % out.len()].clone(),
                Item::Again(k) | Item::Redeliver(k) => match pick(&self.history, *k) {
                    Some(env) => env.clone(),
                    None => continue,
                },
            };
            out.push(env);
        }
        if out.is_empty() {
            // Only re-deliveries, and nothing delivered before: an empty header.
            out.push(self.sign(Vec::new(), Vec::new(), JC.into()));
        }
        out
    }

    /// Signs `header` bytes with the Jobcenter's key, exactly as the envelope crate does.
    fn sign(&self, header: Vec<u8>, payload: Vec<u8>, signer: String) -> SignedEnvelope {
        use ed25519_dalek::Signer;
        let mut input = kurzdraht_envelope::seal::ENVELOPE_DOMAIN.to_vec();
        input.extend_from_slice(&header);
        SignedEnvelope {
            signature: self.jc_key.sign(&input).to_bytes().to_vec(),
            header,
            payload,
            signer,
        }
    }
}

/// The highest inbox sequence number, looking from `after`.
fn last_seq(ledger: &Ledger, after: u64) -> u64 {
    ledger
        .inbox_after(after, usize::MAX)
        .expect("read the inbox")
        .last()
        .map_or(after, |r| r.seq)
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

fn with_unknown_field(mut bytes: Vec<u8>, field: u32, value: &[u8]) -> Vec<u8> {
    prost::encoding::encode_key(
        field,
        prost::encoding::WireType::LengthDelimited,
        &mut bytes,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut bytes);
    bytes.extend_from_slice(value);
    bytes
}

/// What a case's specs are made concrete against.
struct Cx<'a> {
    now: i64,
    year: i32,
    window_ms: i64,
    skew_ms: i64,
    slots: &'a [Slot],
    /// Message ids of earlier cases and of this batch so far.
    ids: Vec<String>,
    /// The consents of the notices of this batch so far: id and person.
    batch_consents: Vec<(String, Option<Subject>)>,
}

impl Cx<'_> {
    fn id(&mut self, spec: &IdSpec) -> String {
        let id = match spec {
            IdSpec::Fresh(rand) => uuid_v7(self.now, rand),
            IdSpec::Reuse(k) => match pick(&self.ids, *k) {
                Some(id) => id.clone(),
                None => uuid_v7(self.now, &[0; 10]),
            },
            IdSpec::V4(bytes) => uuid::Builder::from_random_bytes(*bytes)
                .into_uuid()
                .hyphenated()
                .to_string(),
            IdSpec::Upper(rand) => uuid_v7(self.now, rand).to_uppercase(),
            IdSpec::Text(text) => text.clone(),
        };
        self.ids.push(id.clone());
        id
    }

    fn consent(&self, r: &ConsentRef) -> String {
        match r {
            ConsentRef::Pool(k) => self.slots[k % POOL].record.consent_id.clone(),
            ConsentRef::InBatch(k) => match pick(&self.batch_consents, *k) {
                Some((id, _)) => id.clone(),
                None => uuid_v7(self.now, &[1; 10]),
            },
            ConsentRef::Fresh(rand) => uuid_v7(self.now, rand),
            ConsentRef::Text(text) => text.clone(),
            ConsentRef::Empty => String::new(),
        }
    }

    fn time(&self, t: &TimeSpec) -> i64 {
        match t {
            TimeSpec::Near(d) => self.now.saturating_add(*d),
            TimeSpec::WindowEdge(d) => self.now - self.window_ms + d,
            TimeSpec::SkewEdge(d) => self.now + self.skew_ms + d,
            TimeSpec::Any(t) => *t,
        }
    }

    fn agency(a: &Agency) -> String {
        match a {
            Agency::Jc => JC.into(),
            Agency::Ja => JA.into(),
            Agency::Jn => JN.into(),
            Agency::Text(text) => text.clone(),
        }
    }

    /// The subject, and the consent a header naturally cites for it.
    fn subject(&self, s: &SubjectSpec) -> (Option<Subject>, String) {
        match s {
            SubjectSpec::Cited(k) => match pick(&self.batch_consents, *k) {
                Some((id, subject)) => (subject.clone(), id.clone()),
                None => self.subject(&SubjectSpec::Pool {
                    slot: *k,
                    respell: false,
                    address: None,
                    references: Vec::new(),
                }),
            },
            SubjectSpec::Pool {
                slot,
                respell,
                address,
                references,
            } => {
                let slot = slot % POOL;
                let mut subject = self.slots[slot]
                    .record
                    .subject
                    .clone()
                    .expect("a pool consent names its person");
                if *respell {
                    subject.given_name = format!(" {} ", subject.given_name.to_uppercase());
                    subject.family_name = subject.family_name.replace(' ', "  ").to_lowercase();
                }
                subject.address = address.clone();
                subject.case_references = references.clone();
                (Some(subject), self.slots[slot].record.consent_id.clone())
            }
            SubjectSpec::Given {
                given_name,
                family_name,
                date_of_birth,
                address,
                references,
            } => {
                let date_of_birth = match date_of_birth {
                    DateSpec::Age { years, day } => {
                        let year = self.year - years;
                        time::Date::from_ordinal_date(year, (*day).clamp(1, 365))
                            .map(|d| {
                                format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
                            })
                            .unwrap_or_default()
                    }
                    DateSpec::Text(text) => text.clone(),
                };
                let subject = Subject {
                    given_name: given_name.clone(),
                    family_name: family_name.clone(),
                    date_of_birth,
                    address: address.clone(),
                    case_references: references.clone(),
                };
                (Some(subject), String::new())
            }
            SubjectSpec::Missing => (None, String::new()),
        }
    }

    /// The body, and the consent id a header naturally cites for it.
    fn body(&mut self, spec: &BodySpec) -> (MessageBody, String) {
        let (body, consent) = match spec {
            BodySpec::Case { body, subject } => {
                let (subject, consent) = self.subject(subject);
                let mut body = (**body).clone();
                match &mut body {
                    Body::CertificationRequest(m) => m.subject = subject,
                    Body::MoveOutCertification(m) => m.subject = subject,
                    Body::MoveOutDecision(m) => m.subject = subject,
                    Body::QualificationReferral(m) => m.subject = subject,
                    Body::ReferralResponse(m) => m.subject = subject,
                    Body::ConsentNotice(_) | Body::ConsentWithdrawal(_) => {}
                }
                (Some(body), consent)
            }
            BodySpec::Notice(NoticeSpec::Repeat(k)) => {
                let record = self.slots[k % POOL].record.clone();
                let id = record.consent_id.clone();
                self.batch_consents
                    .push((id.clone(), record.subject.clone()));
                let notice = ConsentNotice {
                    consent: Some(record),
                };
                (Some(Body::ConsentNotice(notice)), id)
            }
            BodySpec::Notice(NoticeSpec::New(c)) => {
                let record = self.new_consent(c);
                let id = record.consent_id.clone();
                self.batch_consents
                    .push((id.clone(), record.subject.clone()));
                let notice = ConsentNotice {
                    consent: Some(record),
                };
                (Some(Body::ConsentNotice(notice)), id)
            }
            BodySpec::Notice(NoticeSpec::Missing) => (
                Some(Body::ConsentNotice(ConsentNotice { consent: None })),
                self.consent(&ConsentRef::InBatch(0)),
            ),
            BodySpec::Withdrawal(w) => {
                let target = w.target.as_ref().map(|t| self.consent(t));
                let withdrawal = target.clone().map(|consent_id| ConsentWithdrawalRecord {
                    consent_id,
                    withdrawn_at_ms: self.time(&w.withdrawn_at),
                    recorded_by: w.recorded_by.clone(),
                    manner: w.manner.clone(),
                });
                (
                    Some(Body::ConsentWithdrawal(ConsentWithdrawal { withdrawal })),
                    target.unwrap_or_default(),
                )
            }
            BodySpec::Empty => (None, String::new()),
        };
        (MessageBody { body }, consent)
    }

    fn new_consent(&mut self, c: &NewConsent) -> ConsentRecord {
        let consent_id = match &c.id {
            NewConsentId::Fresh(rand) => uuid_v7(self.now, rand),
            NewConsentId::Pool(k) => self.slots[k % POOL].record.consent_id.clone(),
            NewConsentId::Text(text) => text.clone(),
        };
        ConsentRecord {
            consent_id,
            subject: self.subject(&c.subject).0,
            given_by: c.given_by,
            guardian_name: c.guardian_name.clone(),
            recording_agency: Self::agency(&c.recording_agency),
            recipients: c.recipients.iter().map(Self::agency).collect(),
            purposes: c.purposes.clone(),
            valid_from_ms: self.time(&c.valid_from),
            valid_until_ms: self.time(&c.valid_until),
            evidence_reference: c.evidence_reference.clone(),
            recorded_by: c.recorded_by.clone(),
            recorded_at_ms: self.time(&c.recorded_at),
            categories: c.categories.clone(),
            legal_basis: c.legal_basis,
            form: c.form,
            evidence_sha256: c.evidence_sha256.clone(),
            supersedes: self.consent(&c.supersedes),
        }
    }

    /// The header (with the payload's hash), the payload and the signer of a spec.
    fn parts(&mut self, spec: &Spec) -> (EnvelopeHeader, Vec<u8>, String) {
        let message_id = self.id(&spec.id);
        let (body, natural_consent) = self.body(&spec.body);
        let consent_id = match &spec.consent {
            HeaderConsent::Natural => natural_consent,
            HeaderConsent::Other(r) => self.consent(r),
        };
        let kind = spec
            .kind
            .unwrap_or_else(|| kurzdraht_envelope::body::kind_of(&body).map_or(0, |k| k as i32));
        let honest = body.encode_to_vec();
        let (payload, hashed) = match &spec.payload {
            PayloadSpec::Honest => (honest.clone(), honest),
            PayloadSpec::UnknownField(field, value) => {
                let p = with_unknown_field(honest, *field, value);
                (p.clone(), p)
            }
            PayloadSpec::Damaged(d) => {
                let p = damaged(honest, d);
                (p.clone(), p)
            }
            PayloadSpec::StaleHash(d) => (damaged(honest.clone(), d), honest),
        };
        let in_reply_to = spec
            .in_reply_to
            .as_ref()
            .map(|i| self.id(i))
            .unwrap_or_default();
        let header = EnvelopeHeader {
            message_id,
            kind,
            sender: Self::agency(&spec.sender),
            recipient: Self::agency(&spec.recipient),
            created_at_ms: self.time(&spec.created),
            payload_sha256: Sha256::digest(&hashed).to_vec(),
            consent_id,
            in_reply_to,
        };
        let header = match &spec.header_tail {
            // Decoded again, so that the unknown field travels in the signed bytes.
            Some((field, value)) => {
                let bytes = with_unknown_field(header.encode_to_vec(), *field, value);
                EnvelopeHeader::decode(bytes.as_slice()).unwrap_or(header)
            }
            None => header,
        };
        (header, payload, Self::agency(&spec.signer))
    }
}

// ---------------------------------------------------------------------------------------
// The oracle.
// ---------------------------------------------------------------------------------------

/// The store as it was before a case, for everything the case's envelopes name.
struct Snapshot {
    inbox: HashMap<String, Option<InboxRecord>>,
    consents: HashMap<String, Option<StoredConsent>>,
}

/// The message id of an envelope whose header decodes.
fn message_id(env: &SignedEnvelope) -> Option<String> {
    EnvelopeHeader::decode(env.header.as_slice())
        .ok()
        .map(|h| h.message_id)
}

/// The consent ids an envelope names in its header and body.
fn consent_ids(env: &SignedEnvelope) -> Vec<String> {
    let mut ids = Vec::new();
    if let Ok(h) = EnvelopeHeader::decode(env.header.as_slice()) {
        ids.push(h.consent_id);
    }
    if let Ok(body) = MessageBody::decode(env.payload.as_slice()) {
        match body.body {
            Some(Body::ConsentNotice(ConsentNotice {
                consent: Some(record),
            })) => {
                ids.push(record.consent_id);
                ids.push(record.supersedes);
            }
            Some(Body::ConsentWithdrawal(ConsentWithdrawal {
                withdrawal: Some(w),
            })) => ids.push(w.consent_id),
            _ => {}
        }
    }
    ids.retain(|id| !id.is_empty());
    ids
}

fn fail(what: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(what.into())
}

impl Snapshot {
    fn take(ledger: &Ledger, envelopes: &[SignedEnvelope]) -> Result<Self, TestCaseError> {
        let mut snapshot = Self {
            inbox: HashMap::new(),
            consents: HashMap::new(),
        };
        for env in envelopes {
            if let Some(id) = message_id(env) {
                let held = ledger
                    .inbox_record(&id)
                    .map_err(|e| fail(format!("read the inbox: {e}")))?;
                snapshot.inbox.insert(id, held);
            }
            for id in consent_ids(env) {
                let held = ledger
                    .consent(&id)
                    .map_err(|e| fail(format!("read a consent: {e}")))?;
                snapshot.consents.insert(id, held);
            }
        }
        Ok(snapshot)
    }
}

/// What a checked case leaves for the next ones.
struct Verdict {
    /// The envelopes accepted (for re-delivery).
    accepted: Vec<SignedEnvelope>,
    /// The message ids of the case (for reuse).
    ids: Vec<String>,
    /// Consent ids named by accepted notices and withdrawals.
    touched: HashSet<String>,
}

/// Refusal codes that come from the envelope itself (size, signature, encoding), before
/// any of the node's own decisions.
const ENVELOPE_CODES: [&str; 6] = [
    "too-large",
    "bad-signature",
    "malformed",
    "payload-hash-mismatch",
    "sender-mismatch",
    "kind-mismatch",
];

#[allow(clippy::too_many_arguments)]
fn check(
    ja_keys: &[VerifyingKey],
    ledger: &Ledger,
    envelopes: &[SignedEnvelope],
    answers: Vec<Result<SignedReceipt, NodeError>>,
    before: &Snapshot,
    settled_since: i64,
    last_seq: &mut u64,
    stats: &mut Stats,
) -> Result<Verdict, TestCaseError> {
    prop_assert_eq!(answers.len(), envelopes.len(), "one answer per envelope");
    let mut verdict = Verdict {
        accepted: Vec::new(),
        ids: Vec::new(),
        touched: HashSet::new(),
    };
    // Message id → hash of the envelope accepted with it in this case.
    let mut accepted: HashMap<String, [u8; 32]> = HashMap::new();
    // Hash → the receipt it was first answered with in this case.
    let mut receipts: HashMap<[u8; 32], SignedReceipt> = HashMap::new();
    for (i, (env, answer)) in envelopes.iter().zip(answers).enumerate() {
        stats.envelopes += 1;
        let hash = envelope_hash(env);
        let header = EnvelopeHeader::decode(env.header.as_slice()).ok();
        let id = header.as_ref().map(|h| h.message_id.clone());
        if let Some(id) = &id {
            verdict.ids.push(id.clone());
        }
        let held_before = id
            .as_ref()
            .and_then(|id| before.inbox.get(id).cloned().flatten());
        // An envelope accepted before (earlier in this case or in an earlier one) is answered
        // with its original receipt — unless it is about to leave the replay window (a sender
        // gives up long before).
        let settled = header.is_some_and(|h| h.created_at_ms >= settled_since);
        let earlier = receipts
            .get(&hash)
            .cloned()
            .or_else(|| {
                held_before
                    .as_ref()
                    .filter(|h| h.envelope_sha256 == hash)
                    .and_then(|h| h.receipt.clone())
            })
            .filter(|_| settled);
        match answer {
            Ok(receipt) => {
                let Some(id) = id else {
                    return Err(fail(format!(
                        "envelope {i}: accepted, but its header does not decode"
                    )));
                };
                verify_receipt(
                    &receipt,
                    ja_keys,
                    &ExpectedReceipt {
                        message_id: &id,
                        envelope_sha256: &hash,
                        sender: JC,
                        receiver: JA,
                    },
                )
                .map_err(|e| fail(format!("envelope {i}: the receipt does not verify: {e}")))?;
                if let Some(earlier) = &earlier {
                    prop_assert_eq!(
                        &receipt,
                        earlier,
                        "envelope {}: a repeat is answered with the original receipt",
                        i
                    );
                    stats.repeats_answered += 1;
                }
                let held = ledger
                    .inbox_record(&id)
                    .map_err(|e| fail(format!("read the inbox: {e}")))?
                    .ok_or_else(|| fail(format!("envelope {i}: accepted but not in the inbox")))?;
                prop_assert_eq!(
                    &held.envelope_sha256[..],
                    &hash[..],
                    "envelope {}: another envelope is stored under its id",
                    i
                );
                prop_assert_eq!(
                    held.envelope.as_ref(),
                    Some(env),
                    "envelope {}: stored as received",
                    i
                );
                prop_assert_eq!(
                    held.receipt.as_ref(),
                    Some(&receipt),
                    "envelope {}: the stored receipt is the one answered",
                    i
                );
                if let Some(prior) = &held_before {
                    prop_assert_eq!(
                        content(prior),
                        content(&held),
                        "envelope {}: a held record is never overwritten",
                        i
                    );
                }
                if !receipts.contains_key(&hash) && held_before.is_none() {
                    stats.accepted += 1;
                    stats.decided += 1;
                    let kind = MessageKind::try_from(held.kind)
                        .map_or_else(|_| held.kind.to_string(), |k| format!("{k:?}"));
                    *stats.accepted_by_kind.entry(kind).or_default() += 1;
                    verdict.accepted.push(env.clone());
                }
                let body = MessageBody::decode(env.payload.as_slice())
                    .map_err(|e| fail(format!("envelope {i}: accepted, body: {e}")))?;
                match body.body {
                    Some(Body::ConsentNotice(ConsentNotice {
                        consent: Some(record),
                    })) => {
                        let stored = ledger
                            .consent(&record.consent_id)
                            .map_err(|e| fail(format!("read a consent: {e}")))?;
                        prop_assert!(
                            stored.is_some_and(|s| s.record.is_some()),
                            "envelope {}: an accepted notice's consent is held",
                            i
                        );
                        verdict.touched.insert(record.consent_id);
                        verdict.touched.insert(record.supersedes);
                    }
                    Some(Body::ConsentWithdrawal(ConsentWithdrawal {
                        withdrawal: Some(w),
                    })) => {
                        let stored = ledger
                            .consent(&w.consent_id)
                            .map_err(|e| fail(format!("read a consent: {e}")))?;
                        prop_assert!(
                            stored.is_some_and(|s| s.withdrawal.is_some()),
                            "envelope {}: an accepted withdrawal is held",
                            i
                        );
                        verdict.touched.insert(w.consent_id);
                    }
                    _ => {}
                }
                accepted.insert(id, hash);
                receipts.entry(hash).or_insert(receipt);
            }
            Err(e) => {
                let code = e.reason_code();
                let text = e.to_string();
                let status = tonic::Status::from(e);
                prop_assert!(!code.is_empty(), "envelope {}: a refusal names a reason", i);
                prop_assert_eq!(
                    reason_of(&status),
                    Some(code),
                    "envelope {}: the status carries the reason",
                    i
                );
                prop_assert!(
                    status.code() != tonic::Code::Internal && status.code() != tonic::Code::Unknown,
                    "envelope {}: a peer's bad input answered as {:?} ({}): {}",
                    i,
                    status.code(),
                    code,
                    text
                );
                prop_assert!(
                    code != "retry",
                    "envelope {}: refused as transient though the store is healthy: {}",
                    i,
                    text
                );
                prop_assert!(
                    earlier.is_none(),
                    "envelope {}: accepted before, now refused ({}): {}",
                    i,
                    code,
                    text
                );
                *stats.refused_by_reason.entry(code).or_default() += 1;
                if !ENVELOPE_CODES.contains(&code) {
                    stats.decided += 1;
                }
            }
        }
    }
    // Stored iff accepted: what appeared in the inbox is exactly what was newly accepted.
    let appeared = ledger
        .inbox_after(*last_seq, usize::MAX)
        .map_err(|e| fail(format!("read the inbox: {e}")))?;
    let newly: HashMap<&String, &[u8; 32]> = accepted
        .iter()
        .filter(|(id, _)| before.inbox.get(*id).is_none_or(Option::is_none))
        .collect();
    for record in &appeared {
        prop_assert_eq!(
            newly.get(&record.message_id).map(|h| &h[..]),
            Some(&record.envelope_sha256[..]),
            "stored though not accepted: {}",
            record.message_id
        );
    }
    prop_assert_eq!(
        appeared.len(),
        newly.len(),
        "every accepted envelope was stored once"
    );
    if let Some(last) = appeared.last() {
        *last_seq = last.seq;
    }
    // A refused envelope leaves the record of its id as it was.
    for (id, held) in &before.inbox {
        if accepted.contains_key(id) {
            continue;
        }
        let now = ledger
            .inbox_record(id)
            .map_err(|e| fail(format!("read the inbox: {e}")))?;
        prop_assert_eq!(
            now.as_ref().map(content),
            held.as_ref().map(content),
            "the inbox record of refused {} changed",
            id
        );
    }
    // ... and every consent it names.
    for (id, held) in &before.consents {
        if verdict.touched.contains(id) {
            continue;
        }
        let now = ledger
            .consent(id)
            .map_err(|e| fail(format!("read a consent: {e}")))?;
        prop_assert_eq!(
            &now,
            held,
            "consent {} changed, though nothing naming it was accepted",
            id
        );
    }
    verdict.touched.remove("");
    Ok(verdict)
}

// ---------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------

/// A stored record's content: without the audit's bookkeeping (a repeat marks its
/// record's duplicate as audited, once), which is no part of what was received.
fn content(r: &kurzdraht_ledger::InboxRecord) -> kurzdraht_ledger::InboxRecord {
    kurzdraht_ledger::InboxRecord {
        duplicate_audited: false,
        ..r.clone()
    }
}

fn run(name: &str, strategy: BoxedStrategy<Case>) -> Stats {
    let mut config = Config {
        source_file: Some(file!()),
        // Failing cases go to tests/reception_fuzz.proptest-regressions and are replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 512,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    let fixture = RefCell::new(Fixture::new());
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |case| fixture.borrow_mut().run_case(&case));
    let fixture = fixture.into_inner();
    report(name, &fixture.stats, started.elapsed());
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    fixture.stats
}

fn report(name: &str, s: &Stats, took: Duration) {
    let share = |n: u64| 100.0 * n as f64 / s.envelopes.max(1) as f64;
    println!(
        "{name}: {} cases ({} one by one) in {:.1} s on {} stores; {} envelopes: {} accepted ({:.1} %), \
         {} refused, {} reached the node's decisions ({:.1} %), {} repeats answered with their receipt",
        s.cases,
        s.one_by_one,
        took.as_secs_f64(),
        s.stores,
        s.envelopes,
        s.accepted,
        share(s.accepted),
        s.refused_by_reason.values().sum::<u64>(),
        s.decided,
        share(s.decided),
        s.repeats_answered,
    );
    println!("  accepted by kind: {:?}", s.accepted_by_kind);
    println!("  refused by reason: {:?}", s.refused_by_reason);
}

#[test]
fn structured_envelopes() {
    let stats = run("structured_envelopes", structured_case());
    // Otherwise the fuzz would never reach storage.
    assert!(
        stats.accepted * 10 >= stats.envelopes,
        "too few accepted to exercise storage: {} of {}",
        stats.accepted,
        stats.envelopes
    );
    if stats.cases >= 200 {
        for kind in [
            MessageKind::CertificationRequest,
            MessageKind::MoveOutDecision,
            MessageKind::QualificationReferral,
            MessageKind::ConsentNotice,
            MessageKind::ConsentWithdrawal,
        ] {
            assert!(
                stats.accepted_by_kind.contains_key(&format!("{kind:?}")),
                "no {kind:?} was accepted"
            );
        }
    }
}

#[test]
fn random_bytes_signed_with_the_pinned_key() {
    let stats = run("random_bytes_signed_with_the_pinned_key", random_case());
    // Damaged encodings often still decode: some must reach the node's own decisions.
    assert!(
        stats.decided * 100 >= stats.envelopes,
        "too few got past decoding: {} of {}",
        stats.decided,
        stats.envelopes
    );
}
