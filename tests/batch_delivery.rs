//! Batched delivery (PeerExchange.DeliverBatch) and the status feed (AgencyApi.WatchStatus)
//! on real nodes: the three Segeberg agencies on loopback with mutual TLS and sled stores
//! ([`kurzdraht_testkit::start`]).
//!
//! The raw tests present the Jobcenter's client certificate to the Jugendamt Kreis Segeberg
//! and seal envelopes with the Jobcenter's signing key, as its node would. Every receipt is
//! verified alone, as a sender or a court would: `kurzdraht_envelope::verify_receipt` with the
//! Jugendamt's key pinned in the Jobcenter's directory, over the envelope exactly as sent.
//! Where a test says "nothing stored", it reads the receiver's inbox through its AgencyApi and,
//! after stopping the node, its audit chain offline.
//!
//! The tests through the nodes submit at the Jobcenter's AgencyApi and follow its delivery
//! worker: WatchStatus, a consent travelling in the same batch as the requests under it,
//! the sender's batch size, the fallback to unary Deliver for a peer that knows only that
//! (an older version, put in the Jugendamt's place on its address and TLS identity), and the
//! order each person's case keeps while several cases travel in parallel delivery lanes.

use kurzdraht_client::AgencyClient;
use kurzdraht_envelope::{
    envelope_hash, ids::new_id, seal, sign_receipt, verify_receipt, ExpectedReceipt, SigningKey,
};
use kurzdraht_ledger::{records::AuditEntry, Ledger};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::error::reason_of;
use kurzdraht_node::{clock, tls};
use kurzdraht_proto::v1::{
    self as pb,
    delivery_outcome::Outcome,
    peer_exchange_client::PeerExchangeClient,
    peer_exchange_server::{PeerExchange, PeerExchangeServer},
    BatchOutcome, BatchReceiptHead, BatchReceiptProof, DeliveryOutcome, DeliveryRefusal,
    EnvelopeBatch, EnvelopeHeader, MessageBody, MessageKind, SignedEnvelope, SignedReceipt,
};
use kurzdraht_testkit::*;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

type Peer = PeerExchangeClient<Channel>;

// ---- the set-up every raw test shares ----

/// A running federation, the configurations of the two agencies the tests use, and one
/// young person with a consent recorded at the Jobcenter and replicated to the Jugendamt.
struct Lab {
    h: Harness,
    jc: NodeConfig,
    ja: NodeConfig,
    person: pb::Subject,
    /// A consent in force at the Jugendamt (recorded through the Jobcenter's AgencyApi).
    consent: String,
    /// The message ids of its consent notices (sent by the Jobcenter's node).
    notices: Vec<String>,
}

impl Lab {
    async fn start() -> Self {
        let h = start().await;
        let jc = h.fed.config(JC).expect("the Jobcenter's config");
        let ja = h.fed.config(JA).expect("the Jugendamt's config");
        let person = subject("Frauke", "Dittmerskamp", &birthday_years_ago(20));
        let (consent, notices) = replicated_consent(&h, &person).await;
        Self {
            h,
            jc,
            ja,
            person,
            consent,
            notices,
        }
    }

    /// A raw PeerExchange client presenting the Jobcenter's client certificate to the
    /// Jugendamt Kreis Segeberg.
    async fn peer(&self) -> Peer {
        let channel = Endpoint::from_shared(format!("https://{}", self.ja.peer_addr))
            .expect("endpoint")
            .tls_config(tls::peer_client_tls(&self.jc.tls, JA))
            .expect("TLS config")
            .connect()
            .await
            .expect("connect to the Jugendamt's peer port");
        PeerExchangeClient::new(channel)
    }

    fn key(&self) -> &SigningKey {
        &self.jc.signing_key
    }

    /// A CertificationRequest from the Jobcenter to `recipient` under `consent_id`, sealed
    /// with the Jobcenter's key.
    fn request_to(&self, recipient: &str, consent_id: &str, reason: &str) -> SignedEnvelope {
        seal(
            header(MessageKind::CertificationRequest, recipient, consent_id),
            &MessageBody {
                body: Some(certification_request(&self.person, reason)),
            },
            self.key(),
        )
    }

    /// A valid CertificationRequest to the Jugendamt under the replicated consent.
    fn request(&self, reason: &str) -> SignedEnvelope {
        self.request_to(JA, &self.consent, reason)
    }

    /// Verifies `receipt` alone, as the Jobcenter would: the Jugendamt's key pinned in the
    /// Jobcenter's directory, over `env` exactly as sent.
    fn verify(&self, what: &str, receipt: &SignedReceipt, env: &SignedEnvelope) -> pb::Receipt {
        let keys = &self
            .jc
            .directory
            .get(JA)
            .expect("the Jugendamt in the Jobcenter's directory")
            .active_keys();
        let id = message_id(env);
        let hash = envelope_hash(env);
        let r = verify_receipt(
            receipt,
            keys,
            &ExpectedReceipt {
                message_id: &id,
                envelope_sha256: &hash,
                sender: JC,
                receiver: JA,
            },
        )
        .unwrap_or_else(|e| panic!("{what}: the receipt does not verify alone: {e}"));
        assert_eq!(r.message_id, id, "{what}");
        assert_eq!(r.envelope_sha256, hash.to_vec(), "{what}");
        r
    }

    /// Whether `receipt` verifies as a receipt for `other` (for controls: verification
    /// really looks at the envelope and at the proof).
    fn verifies_for(&self, receipt: &SignedReceipt, other: &SignedEnvelope) -> bool {
        let keys = &self
            .jc
            .directory
            .get(JA)
            .expect("the Jugendamt in the Jobcenter's directory")
            .active_keys();
        let id = message_id(other);
        let hash = envelope_hash(other);
        verify_receipt(
            receipt,
            keys,
            &ExpectedReceipt {
                message_id: &id,
                envelope_sha256: &hash,
                sender: JC,
                receiver: JA,
            },
        )
        .is_ok()
    }

    async fn api(&self, agency: &str) -> AgencyClient {
        self.h.client(agency).await
    }

    /// The Jugendamt's inbox through its AgencyApi.
    async fn inbox(&self) -> Vec<pb::InboxItem> {
        read_inbox(&mut self.api(JA).await, 0).await
    }

    /// Stops the Jugendamt, opens its store offline (without the data key), checks that the
    /// audit chain verifies and returns its entries.
    async fn jugendamt_audit(&mut self) -> Vec<AuditEntry> {
        self.h.stop(JA).await;
        let ledger = Ledger::open(&self.ja.data_dir).expect("open the Jugendamt's store");
        let report = ledger
            .verify_audit()
            .unwrap_or_else(|e| panic!("the Jugendamt's audit chain does not verify: {e}"));
        let entries = ledger.audit_entries().expect("audit entries");
        assert_eq!(report.entries, entries.len() as u64, "audit chain length");
        entries
    }
}

/// Records a consent for `person` (Jugendamt Kreis Segeberg, U25 move-out) at the Jobcenter
/// and waits until the Jugendamt holds it in force and the Jobcenter has its notice's receipt
/// (so that no notice delivery is still under way when a test starts). Returns the consent
/// id and the message ids of its notices.
async fn replicated_consent(h: &Harness, person: &pb::Subject) -> (String, Vec<String>) {
    let mut jc = h.client(JC).await;
    let recorded = record_consent(
        &mut jc,
        consent_request(person, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let id = recorded.consent.expect("the consent record").consent_id;
    let ja = h.client(JA).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    for notice in &recorded.notice_message_ids {
        wait_for_state(&jc, notice, pb::DeliveryState::Delivered).await;
    }
    (id, recorded.notice_message_ids)
}

fn header(kind: MessageKind, recipient: &str, consent_id: &str) -> EnvelopeHeader {
    EnvelopeHeader {
        message_id: new_id(),
        kind: kind as i32,
        sender: JC.into(),
        recipient: recipient.into(),
        created_at_ms: clock::now_ms(),
        payload_sha256: vec![],
        consent_id: consent_id.into(),
        in_reply_to: String::new(),
    }
}

fn message_id(env: &SignedEnvelope) -> String {
    EnvelopeHeader::decode(env.header.as_slice())
        .expect("our own header decodes")
        .message_id
}

async fn deliver_batch(peer: &mut Peer, envelopes: &[SignedEnvelope]) -> Vec<DeliveryOutcome> {
    let n = envelopes.len();
    let outcomes = peer
        .deliver_batch(EnvelopeBatch {
            envelopes: envelopes.to_vec(),
        })
        .await
        .unwrap_or_else(|s| {
            panic!(
                "DeliverBatch of {n} refused as a whole: {:?}/{:?} {}",
                s.code(),
                reason_of(&s),
                s.message()
            )
        })
        .into_inner()
        .outcomes;
    assert_eq!(outcomes.len(), n, "one outcome per envelope");
    outcomes
}

fn receipt_of<'a>(what: &str, o: &'a DeliveryOutcome) -> &'a SignedReceipt {
    match &o.outcome {
        Some(Outcome::Receipt(r)) => r,
        other => panic!("{what}: expected a receipt, got {other:?}"),
    }
}

/// Asserts a refusal with `code` and reason code `reason`; returns it.
fn refusal_of<'a>(
    what: &str,
    o: &'a DeliveryOutcome,
    code: Code,
    reason: &str,
) -> &'a DeliveryRefusal {
    match &o.outcome {
        Some(Outcome::Refusal(r)) => {
            assert_eq!(
                (Code::from_i32(r.code), r.reason.as_str()),
                (code, reason),
                "{what}: wrong refusal ({:?})",
                r.message
            );
            r
        }
        other => panic!("{what}: expected a refusal {code:?}/{reason}, got {other:?}"),
    }
}

/// The signed head and the proof of a batched receipt (asserting it is one).
fn batch_of<'a>(what: &str, r: &'a SignedReceipt) -> (BatchReceiptHead, &'a BatchReceiptProof) {
    let proof = r
        .batch
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: a batched receipt was expected, got one signed alone"));
    assert!(
        r.signature.is_empty(),
        "{what}: a batched receipt carries no signature of its own"
    );
    let head = BatchReceiptHead::decode(proof.head.as_slice()).expect("the head decodes");
    (head, proof)
}

/// Asserts a receipt signed alone (no batch proof).
fn assert_alone(what: &str, r: &SignedReceipt) {
    assert!(
        r.batch.is_none(),
        "{what}: expected a receipt signed alone, got a batch proof"
    );
    assert_eq!(r.signature.len(), 64, "{what}: an Ed25519 signature");
}

fn inbox_ids_after(items: &[pb::InboxItem], before: usize) -> Vec<String> {
    ids(&items[before..])
}

/// A consent recorded "at the Jobcenter" as its node records one (recording agency: the
/// Jobcenter; recipient: the Jugendamt Kreis Segeberg; U25 move-out; the usual categories).
fn consent_record(id: &str, person: &pb::Subject) -> pb::ConsentRecord {
    let now = clock::now_ms();
    let mut categories: Vec<i32> = EVERY_CATEGORY_BUT_HEALTH
        .iter()
        .map(|c| *c as i32)
        .collect();
    categories.sort_unstable();
    pb::ConsentRecord {
        consent_id: id.into(),
        subject: Some(person.clone()),
        given_by: pb::ConsentGiver::Person as i32,
        guardian_name: String::new(),
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: now - 1_000,
        valid_until_ms: now + 30 * clock::DAY_MS,
        evidence_reference: "JC-SE/Einwilligung/2026/4711".into(),
        recorded_by: "Herr Jensen".into(),
        recorded_at_ms: now,
        categories,
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![0x5a; 32],
        supersedes: String::new(),
    }
}

/// The ConsentNotice the Jobcenter's node seals for the Jugendamt when it records `record`.
fn notice(key: &SigningKey, record: &pb::ConsentRecord) -> SignedEnvelope {
    seal(
        header(MessageKind::ConsentNotice, JA, &record.consent_id),
        &MessageBody {
            body: Some(pb::message_body::Body::ConsentNotice(pb::ConsentNotice {
                consent: Some(record.clone()),
            })),
        },
        key,
    )
}

/// The ConsentWithdrawal the Jobcenter's node seals for the Jugendamt.
fn withdrawal(key: &SigningKey, consent_id: &str) -> SignedEnvelope {
    seal(
        header(MessageKind::ConsentWithdrawal, JA, consent_id),
        &MessageBody {
            body: Some(pb::message_body::Body::ConsentWithdrawal(
                pb::ConsentWithdrawal {
                    withdrawal: Some(pb::ConsentWithdrawalRecord {
                        consent_id: consent_id.into(),
                        withdrawn_at_ms: clock::now_ms(),
                        recorded_by: "Herr Jensen".into(),
                        manner: "schriftlich".into(),
                    }),
                },
            )),
        },
        key,
    )
}

fn events<'a>(audit: &'a [AuditEntry], event: &str) -> Vec<&'a AuditEntry> {
    audit.iter().filter(|e| e.event == event).collect()
}

// ---- 1. a batch of valid envelopes ----

/// Five valid CertificationRequests in one DeliverBatch: five receipts, in order, each a
/// batched receipt (one signed head over a Merkle tree of five, its own leaf index and
/// path) that verifies alone, for its own envelope only; all five in the inbox, in order,
/// stored exactly as sent and received once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_valid_envelopes_gets_one_batched_receipt_each() {
    let mut lab = Lab::start().await;
    let mut peer = lab.peer().await;
    let held = lab.inbox().await;
    let before = held.len();
    // The Jugendamt's IT system follows its inbox from the current end.
    let mut follower = lab
        .api(JA)
        .await
        .read_inbox(pb::ReadInboxRequest {
            after_seq: held.last().map_or(0, |i| i.seq),
            follow: true,
            unacknowledged_only: false,
        })
        .await
        .unwrap_or_else(|s| panic!("follow the inbox: {s:?}"))
        .into_inner();
    let envs: Vec<SignedEnvelope> = (0..5)
        .map(|i| lab.request(&format!("Antrag auf Zusicherung Nr. {i}")))
        .collect();

    let outcomes = deliver_batch(&mut peer, &envs).await;
    let receipts: Vec<&SignedReceipt> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| receipt_of(&format!("envelope {i}"), o))
        .collect();
    let (first_head, _) = batch_of("receipt 0", receipts[0]);
    assert_eq!(first_head.count, 5, "one leaf per accepted envelope");
    assert_eq!(first_head.sender, JC);
    assert_eq!(first_head.receiver, JA);
    assert_eq!(first_head.root.len(), 32);
    for (i, (r, env)) in receipts.iter().zip(&envs).enumerate() {
        let what = format!("receipt {i}");
        let receipt = lab.verify(&what, r, env);
        let (head, proof) = batch_of(&what, r);
        assert_eq!(
            proof.head,
            receipts[0].batch.as_ref().expect("batched").head,
            "{what}: all receipts of the batch share one head"
        );
        assert_eq!(
            proof.signature,
            receipts[0].batch.as_ref().expect("batched").signature,
            "{what}: and its one signature"
        );
        assert_eq!(proof.index, i as u32, "{what}: leaf index = batch position");
        // RFC 9162: in a tree of 5, leaves 0..=3 lie 3 deep, leaf 4 hangs off the root.
        let depth = if i < 4 { 3 } else { 1 };
        assert_eq!(proof.path.len(), depth, "{what}: inclusion path length");
        assert_eq!(receipt.received_at_ms, head.received_at_ms, "{what}");
        assert_eq!(
            (receipt.sender.as_str(), receipt.receiver.as_str()),
            (JC, JA)
        );
        // Controls: the receipt is about this envelope only, and the proof is position-bound.
        let other = &envs[(i + 1) % envs.len()];
        assert!(
            !lab.verifies_for(r, other),
            "{what} also verifies for another envelope of the batch"
        );
        let mut moved = (*r).clone();
        if let Some(b) = moved.batch.as_mut() {
            b.index = (b.index + 1) % 5;
        }
        assert!(
            !lab.verifies_for(&moved, env),
            "{what} still verifies with another leaf index"
        );
    }

    let inbox = lab.inbox().await;
    assert_eq!(inbox.len(), before + 5, "five new inbox items");
    let sent: Vec<String> = envs.iter().map(message_id).collect();
    assert_eq!(
        inbox_ids_after(&inbox, before),
        sent,
        "stored in batch order"
    );
    for (item, env) in inbox[before..].iter().zip(&envs) {
        assert_eq!(item.envelope.as_ref(), Some(env), "stored exactly as sent");
        assert_eq!(item.sender, JC);
        assert_eq!(item.consent_id, lab.consent);
        assert_eq!(item.kind, MessageKind::CertificationRequest as i32);
    }

    // The follower was woken for the batch and gets all five, in order.
    let followed = tokio::time::timeout(TIMEOUT, async {
        let mut got = Vec::new();
        while got.len() < 5 {
            let item = follower
                .message()
                .await
                .unwrap_or_else(|s| panic!("the inbox stream failed: {s:?}"))
                .expect("the inbox stream ended");
            got.push(item.message_id);
        }
        got
    })
    .await
    .unwrap_or_else(|_| panic!("the inbox follower did not get the batch within {TIMEOUT:?}"));
    assert_eq!(followed, sent, "the follower sees the batch in order");
    drop(follower);

    let audit = lab.jugendamt_audit().await;
    for id in &sent {
        let received = events(&audit, "inbox.received")
            .into_iter()
            .filter(|e| &e.message_id == id)
            .count();
        assert_eq!(received, 1, "{id} received exactly once");
    }
    assert!(
        events(&audit, "inbox.refused").is_empty(),
        "nothing refused: {:?}",
        events(&audit, "inbox.refused")
    );
}

// ---- 2. refusals inside a batch ----

/// Valid, bad signature, valid, addressed to Norderstedt, without a consent the Jugendamt
/// holds, valid: the three valid ones are accepted (a head over exactly three leaves), the
/// others refused each with the code and reason a unary Deliver would have given, and
/// nothing of them is stored — only one `inbox.refused` entry of codes each. A batch in
/// which only one envelope is accepted gets a receipt signed alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_envelope_refuses_neither_its_neighbours_nor_leaves_a_trace() {
    let mut lab = Lab::start().await;
    let mut peer = lab.peer().await;
    let before = lab.inbox().await.len();

    let valid_a = lab.request("erster gültiger Antrag");
    let mut bad_signature = lab.request("Antrag mit verfälschter Signatur");
    bad_signature.signature[7] ^= 0x20;
    let valid_b = lab.request("zweiter gültiger Antrag");
    let elsewhere = lab.request_to(JN, &lab.consent, "Antrag an Norderstedt");
    let unknown_consent = new_id();
    let no_consent = lab.request_to(JA, &unknown_consent, "Antrag ohne Einwilligung");
    let valid_c = lab.request("dritter gültiger Antrag");
    // For the second batch.
    let mut bad_again = lab.request("noch eine verfälschte Signatur");
    bad_again.signature[0] ^= 0x01;
    let lone = lab.request("einziger gültiger Antrag");
    let batch = [
        valid_a.clone(),
        bad_signature.clone(),
        valid_b.clone(),
        elsewhere.clone(),
        no_consent.clone(),
        valid_c.clone(),
    ];

    let outcomes = deliver_batch(&mut peer, &batch).await;
    let refusals = [
        refusal_of(
            "bad signature",
            &outcomes[1],
            Code::Unauthenticated,
            "bad-signature",
        ),
        refusal_of(
            "addressed to Norderstedt",
            &outcomes[3],
            Code::PermissionDenied,
            "permission-denied",
        ),
        refusal_of(
            "consent the Jugendamt does not hold",
            &outcomes[4],
            Code::FailedPrecondition,
            "no-consent",
        ),
    ];
    // Each refusal is what a unary Deliver of the same envelope answers.
    for (env, r) in [&bad_signature, &elsewhere, &no_consent]
        .into_iter()
        .zip(refusals)
    {
        let unary = peer
            .deliver(env.clone())
            .await
            .expect_err("a unary Deliver of a refused envelope is refused");
        assert_eq!(
            (
                unary.code() as i32,
                reason_of(&unary).unwrap_or_default(),
                unary.message()
            ),
            (r.code, r.reason.as_str(), r.message.as_str()),
            "batch refusal vs. unary refusal"
        );
    }
    for r in refusals {
        assert!(!r.message.is_empty(), "a refusal explains itself");
        for personal in ["Frauke", "Dittmerskamp", lab.person.date_of_birth.as_str()] {
            assert!(
                !r.message.contains(personal),
                "a refusal message holds personal data: {:?}",
                r.message
            );
        }
    }
    let accepted = [(0, &valid_a), (2, &valid_b), (5, &valid_c)];
    let mut heads = BTreeSet::new();
    for (leaf, (at, env)) in accepted.iter().enumerate() {
        let what = format!("valid envelope at position {at}");
        let r = receipt_of(&what, &outcomes[*at]);
        lab.verify(&what, r, env);
        let (head, proof) = batch_of(&what, r);
        assert_eq!(head.count, 3, "{what}: only accepted envelopes are leaves");
        assert_eq!(
            proof.index, leaf as u32,
            "{what}: leaf index among the accepted"
        );
        heads.insert(proof.head.clone());
    }
    assert_eq!(heads.len(), 1, "the accepted ones share one head");

    let inbox = lab.inbox().await;
    assert_eq!(
        inbox_ids_after(&inbox, before),
        vec![
            message_id(&valid_a),
            message_id(&valid_b),
            message_id(&valid_c)
        ],
        "exactly the valid ones are in the inbox, in order"
    );
    let refused_ids: Vec<String> = [&bad_signature, &elsewhere, &no_consent, &bad_again]
        .iter()
        .map(|e| message_id(e))
        .collect();
    assert!(
        inbox.iter().all(|i| !refused_ids.contains(&i.message_id)),
        "a refused envelope reached the inbox"
    );

    // Only one envelope of a batch accepted: its receipt is signed alone.
    let outcomes = deliver_batch(&mut peer, &[bad_again.clone(), lone.clone()]).await;
    refusal_of(
        "bad signature, second batch",
        &outcomes[0],
        Code::Unauthenticated,
        "bad-signature",
    );
    let r = receipt_of("the only accepted envelope", &outcomes[1]);
    assert_alone("the only accepted envelope", r);
    lab.verify("the only accepted envelope", r, &lone);
    let inbox = lab.inbox().await;
    assert_eq!(inbox.len(), before + 4);
    assert_eq!(
        inbox.last().map(|i| &i.message_id),
        Some(&message_id(&lone))
    );

    // Offline: one refusal entry of codes per refused envelope, nothing else about them.
    let audit = lab.jugendamt_audit().await;
    let mut reasons: Vec<&str> = events(&audit, "inbox.refused")
        .iter()
        .map(|e| e.detail.as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "bad-signature",
            "bad-signature",
            "bad-signature",
            "no-consent",
            "no-consent",
            "permission-denied",
            "permission-denied"
        ],
        "one inbox.refused entry per refusal (three in the first batch, three unary, one \
         in the second batch)"
    );
    let refused_hashes: Vec<Vec<u8>> = [&bad_signature, &elsewhere, &no_consent, &bad_again]
        .iter()
        .map(|e| envelope_hash(e).to_vec())
        .collect();
    for e in &audit {
        assert!(
            !refused_ids.contains(&e.message_id) && !refused_hashes.contains(&e.envelope_sha256),
            "audit entry {} ({}) is about a refused envelope",
            e.seq,
            e.event
        );
    }
    for env in [&valid_a, &valid_b, &valid_c, &lone] {
        let id = message_id(env);
        assert_eq!(
            events(&audit, "inbox.received")
                .iter()
                .filter(|e| e.message_id == id)
                .count(),
            1,
            "{id} received once"
        );
    }
}

// ---- 3. order within a batch ----

/// Each envelope of a batch is decided in order and sees the consent effects of the earlier
/// ones (and not of the later ones): a request before the consent's notice is refused, the
/// same kind of request after it accepted, and after the consent's withdrawal refused again
/// — all in one batch. Likewise a replacement: after its notice in the batch, the old
/// consent is superseded for the requests behind it. A withdrawal in a batch also stops a
/// request under a consent that was replicated earlier (through the nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_envelopes_of_a_batch_see_the_consent_effects_of_earlier_ones() {
    let lab = Lab::start().await;
    let mut peer = lab.peer().await;
    let before = lab.inbox().await.len();
    let fresh = new_id();
    let record = consent_record(&fresh, &lab.person);

    let too_early = lab.request_to(JA, &fresh, "vor der Einwilligung");
    let the_notice = notice(lab.key(), &record);
    let allowed = lab.request_to(JA, &fresh, "nach der Einwilligung");
    let the_withdrawal = withdrawal(lab.key(), &fresh);
    let too_late = lab.request_to(JA, &fresh, "nach dem Widerruf");
    let batch = [
        too_early.clone(),
        the_notice.clone(),
        allowed.clone(),
        the_withdrawal.clone(),
        too_late.clone(),
    ];
    let outcomes = deliver_batch(&mut peer, &batch).await;
    refusal_of(
        "request before the notice in the same batch",
        &outcomes[0],
        Code::FailedPrecondition,
        "no-consent",
    );
    for (at, env, what) in [
        (1, &the_notice, "the consent notice"),
        (2, &allowed, "the request after the notice"),
        (3, &the_withdrawal, "the withdrawal"),
    ] {
        let r = receipt_of(what, &outcomes[at]);
        lab.verify(what, r, env);
        assert_eq!(batch_of(what, r).0.count, 3, "{what}: three accepted");
    }
    refusal_of(
        "request after the withdrawal in the same batch",
        &outcomes[4],
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    let inbox = lab.inbox().await;
    let new_ids = inbox_ids_after(&inbox, before);
    assert!(
        new_ids.contains(&message_id(&allowed)),
        "the request allowed by the notice is in the inbox"
    );
    for refused in [&too_early, &too_late] {
        assert!(
            !new_ids.contains(&message_id(refused)),
            "a refused request is in the inbox"
        );
    }
    // The consent is held, with the notice's record and the withdrawal, and is withdrawn.
    let ja = lab.api(JA).await;
    let entry = wait_for_consent_state(&ja, &fresh, pb::ConsentState::ConsentWithdrawn).await;
    assert_eq!(
        entry.consent.as_ref(),
        Some(&record),
        "the record as noticed"
    );
    assert_eq!(
        entry.withdrawal.as_ref().map(|w| w.consent_id.as_str()),
        Some(fresh.as_str())
    );

    // A replacement in the same batch: after its notice, the old consent no longer allows a
    // request (consent-superseded) and the new one does.
    let (old, new) = (new_id(), new_id());
    let old_record = consent_record(&old, &lab.person);
    let mut new_record = consent_record(&new, &lab.person);
    new_record.supersedes = old.clone();
    let under_old = lab.request_to(JA, &old, "unter der alten Einwilligung");
    let under_old_later = lab.request_to(JA, &old, "unter der ersetzten Einwilligung");
    let under_new = lab.request_to(JA, &new, "unter der neuen Einwilligung");
    let outcomes = deliver_batch(
        &mut peer,
        &[
            notice(lab.key(), &old_record),
            under_old.clone(),
            notice(lab.key(), &new_record),
            under_old_later.clone(),
            under_new.clone(),
        ],
    )
    .await;
    lab.verify(
        "request under the old consent before the replacement",
        receipt_of("under the old consent", &outcomes[1]),
        &under_old,
    );
    refusal_of(
        "request under the old consent after the replacement in the same batch",
        &outcomes[3],
        Code::FailedPrecondition,
        "consent-superseded",
    );
    lab.verify(
        "request under the replacement",
        receipt_of("under the new consent", &outcomes[4]),
        &under_new,
    );
    for at in [0, 2] {
        receipt_of("a consent notice", &outcomes[at]);
    }
    wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentSuperseded).await;
    wait_for_consent_state(&ja, &new, pb::ConsentState::ConsentInForce).await;

    // A consent replicated earlier (through the nodes), withdrawn and cited in one batch.
    let the_withdrawal = withdrawal(lab.key(), &lab.consent);
    let stopped = lab.request("unter der widerrufenen Einwilligung");
    let outcomes = deliver_batch(&mut peer, &[the_withdrawal.clone(), stopped.clone()]).await;
    let r = receipt_of("withdrawal of the replicated consent", &outcomes[0]);
    assert_alone("withdrawal of the replicated consent", r);
    lab.verify("withdrawal of the replicated consent", r, &the_withdrawal);
    refusal_of(
        "request under the consent withdrawn earlier in the batch",
        &outcomes[1],
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    wait_for_consent_state(&ja, &lab.consent, pb::ConsentState::ConsentWithdrawn).await;
    let inbox = lab.inbox().await;
    assert!(
        inbox.iter().all(|i| i.message_id != message_id(&stopped)),
        "the request after the withdrawal is in the inbox"
    );
}

// ---- 4. duplicates ----

/// The same envelope twice in one batch gets the same receipt twice and is stored once;
/// the whole batch delivered again gets the original receipts byte for byte, as does a
/// unary Deliver of one of them; a duplicate next to a new envelope does not change the
/// new one's receipt (signed alone, the only one accepted). A different envelope under a
/// used message id is refused — against the store and within the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_get_the_original_receipt() {
    let mut lab = Lab::start().await;
    let mut peer = lab.peer().await;
    let before = lab.inbox().await.len();
    let a = lab.request("Antrag A");
    let b = lab.request("Antrag B");

    let first = deliver_batch(&mut peer, &[a.clone(), b.clone(), a.clone()]).await;
    let ra = receipt_of("A", &first[0]).clone();
    let rb = receipt_of("B", &first[1]).clone();
    let ra_again = receipt_of("A again in the same batch", &first[2]);
    assert_eq!(
        ra_again.encode_to_vec(),
        ra.encode_to_vec(),
        "the same envelope twice in a batch: the same receipt"
    );
    assert_ne!(ra.encode_to_vec(), rb.encode_to_vec());
    lab.verify("A", &ra, &a);
    lab.verify("A again", ra_again, &a);
    lab.verify("B", &rb, &b);
    assert_eq!(batch_of("A", &ra).0.count, 2, "A is one leaf, not two");
    assert_eq!(
        inbox_ids_after(&lab.inbox().await, before),
        vec![message_id(&a), message_id(&b)],
        "A stored once"
    );

    let second = deliver_batch(&mut peer, &[a.clone(), b.clone(), a.clone()]).await;
    for (i, (o, original)) in second.iter().zip([&ra, &rb, &ra]).enumerate() {
        assert_eq!(
            receipt_of(&format!("redelivery {i}"), o).encode_to_vec(),
            original.encode_to_vec(),
            "redelivered batch, position {i}: the original receipt, byte for byte"
        );
    }
    let unary = peer
        .deliver(a.clone())
        .await
        .unwrap_or_else(|s| panic!("unary redelivery of A refused: {s:?}"))
        .into_inner();
    assert_eq!(
        unary.encode_to_vec(),
        ra.encode_to_vec(),
        "a unary Deliver of a batched envelope: its batched receipt"
    );

    let c = lab.request("Antrag C");
    let third = deliver_batch(&mut peer, &[b.clone(), c.clone()]).await;
    assert_eq!(
        receipt_of("B next to C", &third[0]).encode_to_vec(),
        rb.encode_to_vec()
    );
    let rc = receipt_of("C", &third[1]);
    assert_alone("C, the only new envelope of its batch", rc);
    lab.verify("C", rc, &c);

    // Same message id, other envelope: against the store, and within one batch.
    let a_header = EnvelopeHeader::decode(a.header.as_slice()).expect("header");
    let a_other = seal(
        a_header.clone(),
        &MessageBody {
            body: Some(certification_request(
                &lab.person,
                "anderer Text, gleiche Kennung",
            )),
        },
        lab.key(),
    );
    let d = lab.request("Antrag D");
    let d_other = seal(
        EnvelopeHeader::decode(d.header.as_slice()).expect("header"),
        &MessageBody {
            body: Some(certification_request(&lab.person, "D, anders")),
        },
        lab.key(),
    );
    let fourth = deliver_batch(&mut peer, &[a_other, d.clone(), d_other]).await;
    refusal_of(
        "A's id, other envelope",
        &fourth[0],
        Code::AlreadyExists,
        "message-id-conflict",
    );
    let rd = receipt_of("D", &fourth[1]);
    assert_alone("D", rd);
    lab.verify("D", rd, &d);
    refusal_of(
        "D's id, other envelope, same batch",
        &fourth[2],
        Code::AlreadyExists,
        "message-id-conflict",
    );

    let inbox = lab.inbox().await;
    assert_eq!(
        inbox_ids_after(&inbox, before),
        vec![
            message_id(&a),
            message_id(&b),
            message_id(&c),
            message_id(&d)
        ],
        "each message stored once"
    );
    for (env, item) in [&a, &b, &c, &d].into_iter().zip(&inbox[before..]) {
        assert_eq!(
            item.envelope.as_ref(),
            Some(env),
            "the first envelope is kept"
        );
    }
    // The receipts are the stored ones: the same bytes after a restart.
    lab.h.stop(JA).await;
    lab.h.restart(JA).await;
    let mut peer = lab.peer().await;
    let after_restart = deliver_batch(&mut peer, &[a.clone(), b.clone()]).await;
    for (o, original) in after_restart.iter().zip([&ra, &rb]) {
        assert_eq!(
            receipt_of("after the restart", o).encode_to_vec(),
            original.encode_to_vec(),
            "after a restart: the original receipt, byte for byte"
        );
    }

    let audit = lab.jugendamt_audit().await;
    for env in [&a, &b, &c, &d] {
        let id = message_id(env);
        assert_eq!(
            events(&audit, "inbox.received")
                .iter()
                .filter(|e| e.message_id == id)
                .count(),
            1,
            "{id}: received once"
        );
    }
    // The repeats of A (the second copy in the first batch, both copies in the redelivered
    // batch, the unary redelivery and the one after the restart) are answered alike; the
    // first of them is audited, the others only counted (the audit records decisions, and
    // a repeat decides nothing new).
    assert_eq!(
        events(&audit, "inbox.duplicate")
            .iter()
            .filter(|e| e.message_id == message_id(&a))
            .count(),
        1,
        "the first repeat of A is audited as a duplicate"
    );
    let conflicts = events(&audit, "inbox.refused")
        .iter()
        .filter(|e| e.detail == "message-id-conflict")
        .count();
    assert_eq!(conflicts, 2, "two message-id conflicts audited");
}

// ---- 5. the batch limit ----

/// 257 envelopes: INVALID_ARGUMENT for the whole call, naming the field, and nothing of it
/// stored or audited; the first 256 of them then go through as one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_256_envelopes_is_refused_whole() {
    let mut lab = Lab::start().await;
    let mut peer = lab.peer().await;
    let before = lab.inbox().await;
    let envs: Vec<SignedEnvelope> = (0..257)
        .map(|i| lab.request(&format!("Massenantrag {i}")))
        .collect();

    let refused = peer
        .deliver_batch(EnvelopeBatch {
            envelopes: envs.clone(),
        })
        .await;
    let status = expect_refusal(
        "a batch of 257 envelopes",
        refused,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(
        status.message().contains("envelopes"),
        "the refusal names the field: {:?}",
        status.message()
    );
    let after = lab.inbox().await;
    assert_eq!(ids(&after), ids(&before), "nothing of the batch stored");
    // The other end of the range: an empty batch has no outcomes and changes nothing.
    assert!(deliver_batch(&mut peer, &[]).await.is_empty());
    assert_eq!(ids(&lab.inbox().await), ids(&before));

    let outcomes = deliver_batch(&mut peer, &envs[..256]).await;
    let mut heads = BTreeSet::new();
    for (i, (o, env)) in outcomes.iter().zip(&envs).enumerate() {
        let what = format!("envelope {i} of 256");
        let r = receipt_of(&what, o);
        lab.verify(&what, r, env);
        let (head, proof) = batch_of(&what, r);
        assert_eq!(head.count, 256, "{what}");
        assert_eq!(proof.path.len(), 8, "{what}: a full tree of 256 is 8 deep");
        heads.insert(proof.head.clone());
    }
    assert_eq!(heads.len(), 1, "one head for the whole batch");
    let after = lab.inbox().await;
    assert_eq!(after.len(), before.len() + 256);

    let audit = lab.jugendamt_audit().await;
    assert_eq!(
        events(&audit, "inbox.received").len(),
        before.len() + 256,
        "each of the 256 received once (besides what was there before)"
    );
    assert!(
        events(&audit, "inbox.duplicate").is_empty(),
        "the refused call stored nothing that the second call could have found"
    );
    let left_out = message_id(&envs[256]);
    assert!(
        audit.iter().all(|e| e.message_id != left_out),
        "the 257th envelope left a trace in the audit chain"
    );
}

// ---- 6. through the nodes: WatchStatus ----

/// Twenty messages submitted concurrently at the Jobcenter are delivered (by its delivery
/// worker, batched as they queue up; how many were batched is printed) and each reaches the WatchStatus stream once, as DELIVERED, only when
/// GetStatus already shows it delivered with the same receipt — a receipt that verifies
/// alone against the envelope the Jugendamt holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_reports_each_delivery_with_a_receipt_that_verifies_alone() {
    const N: usize = 20;
    let lab = Lab::start().await;
    let mut jc = lab.api(JC).await;
    let mut watch = jc
        .watch_status(pb::WatchStatusRequest {})
        .await
        .unwrap_or_else(|s| panic!("WatchStatus refused: {s:?}"))
        .into_inner();

    let submissions = (0..N).map(|i| {
        let mut c = jc.clone();
        let consent = lab.consent.clone();
        let body = certification_request(&lab.person, &format!("Antrag {i} (gleichzeitig)"));
        async move { submit_ok(&mut c, JA, &consent, body).await }
    });
    let submitted: BTreeSet<String> = futures_util::future::join_all(submissions)
        .await
        .into_iter()
        .collect();
    assert_eq!(submitted.len(), N, "distinct message ids");

    let mut seen: BTreeMap<String, pb::MessageStatus> = BTreeMap::new();
    let collect = async {
        while seen.len() < N {
            let status = watch
                .message()
                .await
                .unwrap_or_else(|s| panic!("the status stream failed: {s:?}"))
                .unwrap_or_else(|| panic!("the status stream ended after {}", seen.len()));
            if lab.notices.contains(&status.message_id) {
                // The consent notice's own DELIVERED may be published just after the
                // subscription (GetStatus shows it once committed, the feed after the flush).
                continue;
            }
            assert!(
                submitted.contains(&status.message_id),
                "a status of a message not submitted in this test: {status:?}"
            );
            // Published only after it is durable: GetStatus already shows it.
            let now = kurzdraht_testkit::status(&mut jc.clone(), &status.message_id).await;
            assert_eq!(
                state_name(now.state),
                "DELIVERED",
                "GetStatus right after the event"
            );
            assert_eq!(
                now.receipt, status.receipt,
                "GetStatus shows the same receipt"
            );
            let previous = seen.insert(status.message_id.clone(), status);
            assert!(previous.is_none(), "a status reported twice: {previous:?}");
        }
    };
    tokio::time::timeout(TIMEOUT, collect)
        .await
        .unwrap_or_else(|_| panic!("fewer than {N} statuses within {TIMEOUT:?}"));
    // No more statuses (each message once).
    let extra = match tokio::time::timeout(Duration::from_millis(300), watch.message()).await {
        Err(_elapsed) => None,
        Ok(Ok(Some(s))) if lab.notices.contains(&s.message_id) => None,
        Ok(other) => Some(other),
    };
    assert!(extra.is_none(), "an extra status on the stream: {extra:?}");

    let inbox = lab.inbox().await;
    let mut batched = 0;
    for (id, status) in &seen {
        assert_eq!(
            state_name(status.state),
            "DELIVERED",
            "{id}: {:?}",
            status.detail
        );
        assert_eq!(status.recipient, JA);
        assert_eq!(status.kind, MessageKind::CertificationRequest as i32);
        assert_eq!(status.consent_id, lab.consent);
        let item = inbox
            .iter()
            .find(|i| &i.message_id == id)
            .unwrap_or_else(|| panic!("{id} delivered but not in the Jugendamt's inbox"));
        verify_delivery(&lab.h, JC, JA, status, item);
        let receipt = status.receipt.as_ref().expect("a receipt");
        match &receipt.batch {
            Some(b) => {
                batched += 1;
                let head = BatchReceiptHead::decode(b.head.as_slice()).expect("head");
                assert!(head.count >= 2, "a batch head over one receipt");
            }
            None => assert_alone(id, receipt),
        }
    }
    println!("{batched} of {N} receipts were batched");
}

// ---- 7. the fallback to unary Deliver ----

/// What the unary-only peer saw.
#[derive(Default)]
struct Seen {
    batch_calls: usize,
    /// Message ids delivered one by one, in order, the envelopes as they came and the
    /// receipts given for them.
    delivered: Vec<(String, SignedEnvelope, SignedReceipt)>,
    /// Calls without a client certificate (must stay 0: the peer port is mutual TLS).
    without_certificate: usize,
}

/// A PeerExchange of an older version: only the unary Deliver. It stores nothing and signs
/// a receipt with the Jugendamt's key for whatever verifies as the Jobcenter's.
struct UnaryOnlyPeer {
    key: SigningKey,
    sender_keys: Vec<kurzdraht_envelope::VerifyingKey>,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl PeerExchange for UnaryOnlyPeer {
    async fn deliver(
        &self,
        req: Request<SignedEnvelope>,
    ) -> Result<Response<SignedReceipt>, Status> {
        let with_certificate = req.peer_certs().is_some_and(|c| !c.is_empty());
        let env = req.into_inner();
        let opened = kurzdraht_envelope::verify_and_open(
            &env,
            &self.sender_keys,
            &kurzdraht_envelope::Limits::default(),
        )
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let receipt = sign_receipt(
            &pb::Receipt {
                message_id: opened.header.message_id.clone(),
                envelope_sha256: envelope_hash(&env).to_vec(),
                sender: opened.header.sender.clone(),
                receiver: JA.into(),
                received_at_ms: clock::now_ms(),
            },
            &self.key,
        );
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !with_certificate {
            seen.without_certificate += 1;
        }
        seen.delivered
            .push((opened.header.message_id, env, receipt.clone()));
        Ok(Response::new(receipt))
    }

    async fn deliver_batch(
        &self,
        _req: Request<EnvelopeBatch>,
    ) -> Result<Response<BatchOutcome>, Status> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .batch_calls += 1;
        Err(Status::unimplemented("DeliverBatch is not known here"))
    }

    async fn list_delivered(
        &self,
        _req: Request<pb::ListDeliveredRequest>,
    ) -> Result<Response<pb::ListDeliveredResponse>, Status> {
        Err(Status::unimplemented("an older version"))
    }

    async fn fetch_delivered(
        &self,
        _req: Request<pb::FetchDeliveredRequest>,
    ) -> Result<Response<pb::FetchDeliveredResponse>, Status> {
        Err(Status::unimplemented("an older version"))
    }

    async fn list_received(
        &self,
        _req: Request<pb::ListReceivedRequest>,
    ) -> Result<Response<pb::ListReceivedResponse>, Status> {
        Err(Status::unimplemented("an older version"))
    }
}

/// The Jugendamt is replaced, on its peer address and with its TLS identity, by a peer that
/// answers DeliverBatch with UNIMPLEMENTED: the Jobcenter's worker asks once, then delivers
/// one by one, in order; every message becomes DELIVERED with that peer's receipt (signed
/// alone), which verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_deliver_batch_gets_the_messages_one_by_one() {
    let mut lab = Lab::start().await;
    lab.h.stop(JA).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let fake = UnaryOnlyPeer {
        key: lab.ja.signing_key.clone(),
        sender_keys: lab
            .ja
            .directory
            .get(JC)
            .expect("the Jobcenter in the Jugendamt's directory")
            .active_keys()
            .to_vec(),
        seen: seen.clone(),
    };
    let listener = tokio::net::TcpListener::bind(lab.ja.peer_addr)
        .await
        .expect("bind the Jugendamt's peer address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(tls::peer_server_tls(&lab.ja.tls))
        .expect("the Jugendamt's TLS config")
        .add_service(PeerExchangeServer::new(fake))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    let server = tokio::spawn(server);

    let mut jc = lab.api(JC).await;
    let mut submitted = Vec::new();
    for i in 0..3 {
        let body = certification_request(&lab.person, &format!("Antrag {i} an einen alten Knoten"));
        submitted.push(submit_ok(&mut jc, JA, &lab.consent, body).await);
    }
    let mut statuses = Vec::new();
    for id in &submitted {
        statuses.push(wait_for_state(&jc, id, pb::DeliveryState::Delivered).await);
    }

    let seen = {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        (s.batch_calls, s.delivered.clone(), s.without_certificate)
    };
    let (batch_calls, delivered, without_certificate) = seen;
    assert_eq!(
        batch_calls, 1,
        "DeliverBatch asked once, then no more after UNIMPLEMENTED"
    );
    assert_eq!(
        without_certificate, 0,
        "every call with a client certificate"
    );
    assert_eq!(
        delivered
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect::<Vec<_>>(),
        submitted,
        "each message delivered once, one by one, in submission order"
    );
    let keys = &lab
        .jc
        .directory
        .get(JA)
        .expect("the Jugendamt in the Jobcenter's directory")
        .active_keys();
    for (status, (id, env, given)) in statuses.iter().zip(&delivered) {
        assert_eq!(&status.message_id, id);
        let receipt = status
            .receipt
            .as_ref()
            .expect("a delivered message has a receipt");
        assert_eq!(
            receipt.encode_to_vec(),
            given.encode_to_vec(),
            "{id}: the status holds the receipt the peer gave"
        );
        assert_alone(id, receipt);
        // Against the envelope as it came over the wire.
        let hash = envelope_hash(env);
        verify_receipt(
            receipt,
            keys,
            &ExpectedReceipt {
                message_id: id,
                envelope_sha256: &hash,
                sender: JC,
                receiver: JA,
            },
        )
        .unwrap_or_else(|e| panic!("{id}: receipt does not verify: {e}"));
    }

    let _ = stop.send(());
    server
        .await
        .expect("the unary-only peer's task")
        .expect("the unary-only peer served");
}

// ---- 8. through the nodes: a consent and its requests in one batch ----

/// The Jugendamt is down while the Jobcenter records a consent and submits five requests
/// under it: the notice and the requests wait in the outbox together and, once the
/// Jugendamt is back, travel as one batch — notice first. The Jugendamt must accept the
/// requests on the strength of the notice earlier in the same batch: all five DELIVERED,
/// their receipts under one head over six leaves, the inbox in outbox order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_and_the_requests_under_it_travel_in_one_batch() {
    let mut h = start().await;
    let person = subject("Jannik", "Wulffbrook", &birthday_years_ago(19));
    let ja_before = read_inbox(&mut h.client(JA).await, 0).await.len();
    h.stop(JA).await;

    let mut jc = h.client(JC).await;
    let recorded = record_consent(
        &mut jc,
        consent_request(&person, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let consent = recorded.consent.expect("the record").consent_id;
    let notice_id = recorded
        .notice_message_ids
        .first()
        .expect("a notice for the Jugendamt")
        .clone();
    let mut submitted = Vec::new();
    for i in 0..5 {
        let body =
            certification_request(&person, &format!("Antrag {i} gleich nach der Einwilligung"));
        submitted.push(submit_ok(&mut jc, JA, &consent, body).await);
    }
    h.restart(JA).await;

    let notice = wait_for_state(&jc, &notice_id, pb::DeliveryState::Delivered).await;
    let mut statuses = Vec::new();
    for id in &submitted {
        // REJECTED here would mean: the Jugendamt decided a request without the notice
        // delivered before it in the same batch.
        statuses.push(wait_for_state(&jc, id, pb::DeliveryState::Delivered).await);
    }
    let mut ja = h.client(JA).await;
    let inbox = read_inbox(&mut ja, 0).await;
    let mut expected_order = vec![notice_id.clone()];
    expected_order.extend(submitted.iter().cloned());
    assert_eq!(
        ids(&inbox[ja_before..]),
        expected_order,
        "the Jugendamt stored the notice, then the requests, in outbox order"
    );
    let heads: BTreeSet<Vec<u8>> = std::iter::once(&notice)
        .chain(&statuses)
        .map(|s| {
            let receipt = s.receipt.as_ref().expect("a receipt");
            let (head, proof) = batch_of(&s.message_id, receipt);
            assert_eq!(head.count, 6, "notice and five requests in one batch");
            proof.head.clone()
        })
        .collect();
    assert_eq!(heads.len(), 1, "one head over the notice and the requests");
    for s in &statuses {
        let item = inbox
            .iter()
            .find(|i| i.message_id == s.message_id)
            .expect("in the inbox");
        verify_delivery(&h, JC, JA, s, item);
    }
    wait_for_consent_state(&ja, &consent, pb::ConsentState::ConsentInForce).await;
}

// ---- 9. through the nodes: WatchStatus carries refusals too ----

/// A queued message stopped by a withdrawal reaches the WatchStatus stream as REFUSED
/// (reason consent-withdrawn, no receipt), as GetStatus shows it; nothing of it reaches the
/// Jugendamt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_reports_a_message_stopped_by_a_withdrawal() {
    let mut lab = Lab::start().await;
    lab.h.stop(JA).await;
    let mut jc = lab.api(JC).await;
    let mut watch = jc
        .watch_status(pb::WatchStatusRequest {})
        .await
        .unwrap_or_else(|s| panic!("WatchStatus refused: {s:?}"))
        .into_inner();
    let id = submit_ok(
        &mut jc,
        JA,
        &lab.consent,
        certification_request(&lab.person, "wartet auf das Jugendamt"),
    )
    .await;
    // Wait until the worker has tried (and failed) once: the message is then waiting for
    // its retry when the consent is withdrawn.
    wait_until("the first delivery attempt failed", || {
        let mut c = jc.clone();
        let id = id.clone();
        async move {
            let s = kurzdraht_testkit::status(&mut c, &id).await;
            if s.attempts >= 1 {
                Ok(())
            } else {
                Err(format!("{} attempts, {}", s.attempts, state_name(s.state)))
            }
        }
    })
    .await;
    jc.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: lab.consent.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .unwrap_or_else(|s| panic!("withdraw: {s:?}"));

    let status = tokio::time::timeout(TIMEOUT, async {
        loop {
            let s = watch
                .message()
                .await
                .unwrap_or_else(|s| panic!("the status stream failed: {s:?}"))
                .expect("the status stream ended");
            if lab.notices.contains(&s.message_id) {
                continue;
            }
            break s;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no status within {TIMEOUT:?}"));
    assert_eq!(
        status.message_id, id,
        "the first final status is the stopped message's"
    );
    assert_eq!(state_name(status.state), "REFUSED", "{:?}", status.detail);
    assert!(
        status.detail.contains("consent-withdrawn"),
        "detail: {:?}",
        status.detail
    );
    assert!(status.receipt.is_none(), "a refused message has no receipt");
    let now = kurzdraht_testkit::status(&mut jc, &id).await;
    assert_eq!(now.state, status.state);
    assert_eq!(now.detail, status.detail);
}

// ---- 10. the same batch twice at once ----

/// A sender that retries a batch while the first call is still running (a timeout, a lost
/// connection): three DeliverBatch calls with the same twenty envelopes at once, one of them
/// in reverse order. Every envelope is stored once, and every call answers it with the same
/// receipt — the stored one, which verifies alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_delivered_concurrently_is_stored_once() {
    let mut lab = Lab::start().await;
    let peer = lab.peer().await;
    let before = lab.inbox().await.len();
    let envs: Vec<SignedEnvelope> = (0..20)
        .map(|i| lab.request(&format!("gleichzeitig zugestellt {i}")))
        .collect();
    let mut reversed = envs.clone();
    reversed.reverse();

    let calls = [envs.clone(), reversed, envs.clone()].map(|batch| {
        let mut p = peer.clone();
        async move {
            let outcomes = deliver_batch(&mut p, &batch).await;
            batch
                .iter()
                .map(message_id)
                .zip(outcomes)
                .collect::<BTreeMap<String, DeliveryOutcome>>()
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for env in &envs {
        let id = message_id(env);
        let receipts: Vec<Vec<u8>> = answers
            .iter()
            .enumerate()
            .map(|(call, by_id)| {
                let what = format!("{id} in call {call}");
                let r = receipt_of(&what, &by_id[&id]);
                lab.verify(&what, r, env);
                r.encode_to_vec()
            })
            .collect();
        assert!(
            receipts.windows(2).all(|w| w[0] == w[1]),
            "{id}: the concurrent calls answered with different receipts"
        );
    }
    let inbox = lab.inbox().await;
    let new_ids: BTreeSet<String> = inbox_ids_after(&inbox, before).into_iter().collect();
    let sent: BTreeSet<String> = envs.iter().map(message_id).collect();
    assert_eq!(inbox.len(), before + 20, "each envelope stored once");
    assert_eq!(new_ids, sent);

    let audit = lab.jugendamt_audit().await;
    for id in &sent {
        assert_eq!(
            events(&audit, "inbox.received")
                .iter()
                .filter(|e| &e.message_id == id)
                .count(),
            1,
            "{id} received once"
        );
    }
}

// ---- 11. the sender's batch size ----

/// 300 messages queued at the Jobcenter while the Jugendamt is down go out, once it is back,
/// in two batches: the oldest 256 (the most one DeliverBatch may carry), then the other 44.
/// All are DELIVERED and arrive once; the Jugendamt stores the first batch before the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_puts_at_most_256_messages_in_one_batch() {
    const N: usize = 300;
    let mut lab = Lab::start().await;
    let before = lab.inbox().await.len();
    lab.h.stop(JA).await;
    let jc = lab.api(JC).await;
    let submissions = (0..N).map(|i| {
        let mut c = jc.clone();
        let consent = lab.consent.clone();
        let body = certification_request(&lab.person, &format!("Sammelantrag {i}"));
        async move { submit_ok(&mut c, JA, &consent, body).await }
    });
    let submitted = futures_util::future::join_all(submissions).await;
    lab.h.restart(JA).await;

    let statuses = wait_until("all 300 messages are delivered", || {
        let jc = jc.clone();
        let submitted = &submitted;
        async move {
            let mut all = Vec::with_capacity(N);
            for id in submitted {
                let s = kurzdraht_testkit::status(&mut jc.clone(), id).await;
                if s.state != pb::DeliveryState::Delivered as i32 {
                    return Err(format!("{id}: {} ({:?})", state_name(s.state), s.detail));
                }
                all.push(s);
            }
            Ok(all)
        }
    })
    .await;
    let mut per_head: BTreeMap<Vec<u8>, (u32, usize)> = BTreeMap::new();
    let mut batch_size: BTreeMap<&str, u32> = BTreeMap::new();
    for s in &statuses {
        let receipt = s.receipt.as_ref().expect("a receipt");
        let (head, proof) = batch_of(&s.message_id, receipt);
        per_head
            .entry(proof.head.clone())
            .or_insert((head.count, 0))
            .1 += 1;
        batch_size.insert(&s.message_id, head.count);
    }
    let mut sizes: Vec<(u32, usize)> = per_head.into_values().collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        [(44, 44), (256, 256)],
        "(head count, receipts under it): one batch of 256, then one of 44"
    );
    let inbox = lab.inbox().await;
    assert_eq!(inbox.len(), before + N);
    let arrived: BTreeSet<String> = inbox_ids_after(&inbox, before).into_iter().collect();
    let sent: BTreeSet<String> = submitted.iter().cloned().collect();
    assert_eq!(arrived, sent, "every message arrived once");
    let in_arrival_order: Vec<u32> = inbox[before..]
        .iter()
        .map(|i| batch_size[i.message_id.as_str()])
        .collect();
    assert!(
        in_arrival_order[..256].iter().all(|c| *c == 256)
            && in_arrival_order[256..].iter().all(|c| *c == 44),
        "the batch of 256 (the oldest) is stored before the batch of 44"
    );
    for s in statuses.iter().step_by(37) {
        let item = inbox
            .iter()
            .find(|i| i.message_id == s.message_id)
            .expect("in the inbox");
        verify_delivery(&lab.h, JC, JA, s, item);
    }
}

/// Delivery lanes keep what must keep its order: several young people's cases travel at
/// once (their consents fall into different lanes), and for each person the Jugendamt
/// receives the consent notice before the requests under it, the requests in the order they
/// were submitted, and a replacing consent's notice after them and before the requests under
/// the new consent. Nothing is refused on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_persons_messages_keep_their_order_across_lanes() {
    const PERSONS: usize = 8;
    let h = start().await;
    let runs = (0..PERSONS).map(|i| {
        let h = &h;
        async move {
            let mut jc = h.client(JC).await;
            let person = subject("Lena", &format!("Reihenfolge{i}"), &birthday_years_ago(20));
            let first = record_consent(
                &mut jc,
                consent_request(&person, &[JA], &[pb::Purpose::U25MoveOut]),
            )
            .await;
            let first_id = first.consent.expect("record").consent_id;
            // submitted at once, without waiting for the notice to arrive
            let mut order = first.notice_message_ids.clone();
            for n in 0..5 {
                let body = certification_request(&person, &format!("Antrag {n}"));
                order.push(submit_ok(&mut jc, JA, &first_id, body).await);
            }
            // the old consent's requests are delivered before it is replaced (a request still
            // queued then would be stopped by the sender's own check, as it should be)
            for id in &order {
                wait_for_state(&jc, id, pb::DeliveryState::Delivered).await;
            }
            let mut change = consent_request(
                &person,
                &[JA],
                &[pb::Purpose::U25MoveOut, pb::Purpose::QualificationMeasure],
            );
            change.supersedes = first_id.clone();
            let second = record_consent(&mut jc, change).await;
            let second_id = second.consent.expect("record").consent_id;
            // The replacement is queued in the lane of the consent it replaces (the root of
            // its chain), at the sender and — once replicated — at the receiver: that is
            // what keeps a replacement behind the messages under the old consent. A lane
            // by consent id would give a new id another lane for 7 of 8 persons.
            let jc_ledger = h.node(JC).ledger();
            assert_eq!(
                jc_ledger
                    .lane_of(&second_id)
                    .expect("lane of the replacement"),
                jc_ledger.lane_of(&first_id).expect("lane of the first"),
                "the replacement of {first_id} left its lane"
            );
            order.extend(second.notice_message_ids);
            for n in 0..3 {
                let body = certification_request(&person, &format!("Folgeantrag {n}"));
                order.push(submit_ok(&mut jc, JA, &second_id, body).await);
            }
            for id in &order {
                wait_for_state(&jc, id, pb::DeliveryState::Delivered).await;
            }
            (first_id, order)
        }
    });
    let persons = futures_util::future::join_all(runs).await;

    let lanes: BTreeSet<u8> = persons
        .iter()
        .map(|(root, _)| kurzdraht_ledger::lane_of_root(root))
        .collect();
    assert!(lanes.len() > 1, "all {PERSONS} cases fell into one lane");
    let mut ja = h.client(JA).await;
    let inbox = read_inbox(&mut ja, 0).await;
    let arrival: BTreeMap<String, u64> = inbox
        .iter()
        .map(|item| (item.message_id.clone(), item.seq))
        .collect();
    for (root, order) in &persons {
        let seqs: Vec<u64> = order
            .iter()
            .map(|id| {
                *arrival
                    .get(id)
                    .unwrap_or_else(|| panic!("{id} not in the inbox"))
            })
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "the case of consent {root} arrived out of order: {seqs:?}"
        );
    }
    assert_eq!(inbox.len(), PERSONS * (1 + 5 + 1 + 3));
}
