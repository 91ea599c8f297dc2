//! Hostile and broken peers against real nodes: three agencies on loopback with mutual TLS
//! and sled stores (`LocalFederation`), attacked through raw PeerExchange clients.
//!
//! Every refusal is checked the same way: the gRPC code, the `kurzdraht-reason` metadata,
//! that the receiver's inbox and consent ledger are unchanged (read through its AgencyApi),
//! and that the node still serves (a fresh valid delivery is accepted and its receipt
//! verifies). At the end every node is stopped and its store opened offline: the audit
//! chain verifies, holds exactly one `inbox.refused` entry per refusal the node decided,
//! and no subject name or date of birth.

use kurzdraht_client::AgencyClient;
use kurzdraht_envelope::{
    envelope_hash, ids::new_id, seal, verify_receipt, ExpectedReceipt, SigningKey,
};
use kurzdraht_ledger::Ledger;
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::error::reason_of;
use kurzdraht_node::{clock, tls};
use kurzdraht_proto::v1::{
    self as pb, message_body::Body, peer_exchange_client::PeerExchangeClient, EnvelopeHeader,
    MessageBody, MessageKind, SignedEnvelope, SignedReceipt,
};
use kurzdraht_testkit::{subject, today, LocalFederation};
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type Peer = PeerExchangeClient<Channel>;

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const JN: &str = "jugendamt-norderstedt";

// Distinctive personal data, so that the audit chain can be searched for it.
const GIVEN: &str = "Lenora";
const FAMILY: &str = "Quastenberg";
const OTHER_GIVEN: &str = "Kasimir";
const OTHER_FAMILY: &str = "Lorenzsen";
const OLD_GIVEN: &str = "Ottokar";
const OLD_FAMILY: &str = "Altmannsdorf";
const OLD_DOB: &str = "1979-02-03";

/// `YYYY-MM-DD` of a person who is `age` (± a few months) today.
fn dob_of_age(age: i32) -> String {
    let year = clock::date_of_ms(clock::now_ms())
        .map(|d| d.year())
        .unwrap_or(2026);
    format!("{}-04-12", year - age)
}

/// A CertificationRequest about `s` that wants its answer by today.
fn certification_request(s: pb::Subject) -> MessageBody {
    let mut body = kurzdraht_testkit::certification_request(
        &s,
        "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II",
    );
    if let Body::CertificationRequest(request) = &mut body {
        request.respond_by = today();
    }
    MessageBody { body: Some(body) }
}

fn move_out_certification(s: pb::Subject) -> MessageBody {
    MessageBody {
        body: Some(kurzdraht_testkit::move_out_certification(&s)),
    }
}

fn header(kind: MessageKind, sender: &str, recipient: &str, consent_id: &str) -> EnvelopeHeader {
    EnvelopeHeader {
        message_id: new_id(),
        kind: kind as i32,
        sender: sender.into(),
        recipient: recipient.into(),
        created_at_ms: clock::now_ms(),
        payload_sha256: vec![],
        consent_id: consent_id.into(),
        in_reply_to: String::new(),
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic "garbage", no extra dependency
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a refusal must leave unchanged at the receiver.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    inbox: Vec<(u64, String)>,
    consents: Vec<Vec<u8>>,
}

async fn inbox(client: &mut AgencyClient) -> Result<Vec<pb::InboxItem>, tonic::Status> {
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            unacknowledged_only: false,
        })
        .await?
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await? {
        items.push(item);
    }
    Ok(items)
}

async fn snapshot(client: &mut AgencyClient) -> Result<Snapshot, tonic::Status> {
    let inbox = inbox(client)
        .await?
        .into_iter()
        .map(|i| (i.seq, i.message_id))
        .collect();
    let consents = client
        .list_consents(pb::ListConsentsRequest::default())
        .await?
        .into_inner()
        .consents
        .iter()
        .map(|c| {
            // the state is computed at read time; the stored record and withdrawal count
            let mut bytes = c.consent.clone().unwrap_or_default().encode_to_vec();
            bytes.extend(c.withdrawal.clone().unwrap_or_default().encode_to_vec());
            bytes
        })
        .collect();
    Ok(Snapshot { inbox, consents })
}

/// A whole federation under attack, with the bookkeeping the final audit check needs.
struct Lab {
    _tmp: tempfile::TempDir,
    fed: LocalFederation,
    cfg: BTreeMap<&'static str, NodeConfig>,
    api: BTreeMap<&'static str, AgencyClient>,
    /// Raw PeerExchange clients, keyed by (TLS identity, target node).
    peers: BTreeMap<(&'static str, &'static str), Peer>,
    /// A consent recorded at the Jobcenter, naming the Jugendamt Kreis Segeberg, replicated there.
    consent_id: String,
    person: pb::Subject,
    /// Reason codes of the refusals each node decided itself (and must have audited).
    audited: BTreeMap<&'static str, Vec<&'static str>>,
    refusals: usize,
}

impl Lab {
    async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tmp = tempfile::tempdir()?;
        let fed = LocalFederation::start(&tmp.path().join("federation")).await?;
        let mut cfg = BTreeMap::new();
        let mut api = BTreeMap::new();
        for a in [JC, JA, JN] {
            cfg.insert(a, fed.config(a)?);
            api.insert(a, fed.client(a).await?);
        }
        let mut lab = Self {
            _tmp: tmp,
            fed,
            cfg,
            api,
            peers: BTreeMap::new(),
            consent_id: String::new(),
            person: subject(GIVEN, FAMILY, &dob_of_age(20)),
            audited: BTreeMap::new(),
            refusals: 0,
        };
        let person = lab.person.clone();
        let recorded = lab
            .api(JC)
            .record_consent(pb::RecordConsentRequest {
                subject: Some(person),
                given_by: pb::ConsentGiver::Person as i32,
                recipients: vec![JA.into()],
                purposes: vec![pb::Purpose::U25MoveOut as i32],
                categories: kurzdraht_testkit::EVERY_CATEGORY_BUT_HEALTH
                    .iter()
                    .map(|c| *c as i32)
                    .collect(),
                legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
                form: pb::ConsentForm::Written as i32,
                evidence_sha256: vec![0x11; 32],
                evidence_reference: "JC-SE/Einwilligung/2026/0815".into(),
                recorded_by: "Herr Jensen".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        lab.consent_id = recorded
            .consent
            .map(|c| c.consent_id)
            .ok_or("no consent recorded")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let held = lab
                .api(JA)
                .list_consents(pb::ListConsentsRequest::default())
                .await?
                .into_inner();
            if held.consents.iter().any(|c| {
                c.consent
                    .as_ref()
                    .is_some_and(|r| r.consent_id == lab.consent_id)
                    && c.state == pb::ConsentState::ConsentInForce as i32
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consent not replicated to {JA} within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(lab)
    }

    fn cfg(&self, agency: &str) -> &NodeConfig {
        &self.cfg[agency]
    }

    fn key(&self, agency: &str) -> SigningKey {
        self.cfg(agency).signing_key.clone()
    }

    fn api(&mut self, agency: &'static str) -> &mut AgencyClient {
        self.api
            .get_mut(agency)
            .expect("an AgencyApi client per agency")
    }

    /// A PeerExchange client presenting `as_agency`'s TLS certificate to `target`'s node.
    async fn peer(
        &mut self,
        as_agency: &'static str,
        target: &'static str,
    ) -> Result<Peer, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(p) = self.peers.get(&(as_agency, target)) {
            return Ok(p.clone());
        }
        let channel = Endpoint::from_shared(format!("https://{}", self.cfg(target).peer_addr))?
            .tls_config(tls::peer_client_tls(&self.cfg(as_agency).tls, target))?
            .connect()
            .await?;
        let p = PeerExchangeClient::new(channel);
        self.peers.insert((as_agency, target), p.clone());
        Ok(p)
    }

    /// The consent-backed case message that `target` must accept: JC → JA CertificationRequest,
    /// JA → JC MoveOutCertification.
    fn valid_envelope(&self, target: &str) -> SignedEnvelope {
        match target {
            JA => seal(
                header(MessageKind::CertificationRequest, JC, JA, &self.consent_id),
                &certification_request(self.person.clone()),
                &self.cfg(JC).signing_key,
            ),
            JC => seal(
                header(MessageKind::MoveOutCertification, JA, JC, &self.consent_id),
                &move_out_certification(self.person.clone()),
                &self.cfg(JA).signing_key,
            ),
            other => panic!("no valid case message to {other} in this suite"),
        }
    }

    /// Verifies `receipt` as the sender would: the receiver's pinned key, over this envelope.
    fn check_receipt(
        &self,
        receipt: &SignedReceipt,
        env: &SignedEnvelope,
        sender: &str,
        receiver: &str,
    ) -> pb::Receipt {
        let keys = self
            .cfg(sender)
            .directory
            .get(receiver)
            .map(|a| a.active_keys().to_vec())
            .unwrap_or_default();
        let hdr = EnvelopeHeader::decode(env.header.as_slice()).expect("own header decodes");
        let hash = envelope_hash(env);
        verify_receipt(
            receipt,
            &keys,
            &ExpectedReceipt {
                message_id: &hdr.message_id,
                envelope_sha256: &hash,
                sender,
                receiver,
            },
        )
        .unwrap_or_else(|e| panic!("receipt from {receiver} does not verify: {e}"))
    }

    /// Delivers a fresh valid envelope to `target` and checks receipt and inbox.
    async fn still_serves(&mut self, target: &'static str) -> TestResult {
        let sender = if target == JA { JC } else { JA };
        let env = self.valid_envelope(target);
        self.accepted(
            &format!("{target}: a valid delivery after a refusal"),
            (sender, target),
            env,
        )
        .await
    }

    /// Delivers `env` to `target` through `via` and expects a refusal decided by the node:
    /// `code`, reason `reason`, nothing stored, one `inbox.refused` audit entry, and the
    /// node still serving afterwards.
    async fn refused(
        &mut self,
        what: &str,
        via: (&'static str, &'static str),
        env: SignedEnvelope,
        code: Code,
        reason: &'static str,
    ) -> TestResult {
        self.refused_with(what, via, env, code, reason).await?;
        Ok(())
    }

    /// As [`Self::refused`], returning the status (to check the field it names).
    async fn refused_with(
        &mut self,
        what: &str,
        via: (&'static str, &'static str),
        env: SignedEnvelope,
        code: Code,
        reason: &'static str,
    ) -> Result<tonic::Status, Box<dyn std::error::Error + Send + Sync>> {
        let target = via.1;
        let status = self.refused_raw(what, via, env, code).await?;
        assert_eq!(
            reason_of(&status),
            Some(reason),
            "{what}: reason (message: {})",
            status.message()
        );
        self.audited.entry(target).or_default().push(reason);
        self.still_serves(target).await?;
        Ok(status)
    }

    /// Delivers `env` through `via` and expects it accepted: a receipt that verifies, and
    /// the envelope in the target's inbox (the positive control beside a refusal).
    async fn accepted(
        &mut self,
        what: &str,
        (sender, target): (&'static str, &'static str),
        env: SignedEnvelope,
    ) -> TestResult {
        let mut peer = self.peer(sender, target).await?;
        let receipt = peer
            .deliver(env.clone())
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "{what}: refused: {:?}/{:?} {}",
                    s.code(),
                    reason_of(&s),
                    s.message()
                )
            })
            .into_inner();
        let r = self.check_receipt(&receipt, &env, sender, target);
        let held = inbox(self.api(target)).await?;
        assert!(
            held.iter()
                .any(|i| i.message_id == r.message_id && i.envelope.as_ref() == Some(&env)),
            "{what}: not in {target}'s inbox"
        );
        Ok(())
    }

    /// As [`Self::refused`], for refusals made by the transport before the node sees the
    /// envelope (no reason code required, nothing audited).
    async fn refused_by_transport(
        &mut self,
        what: &str,
        via: (&'static str, &'static str),
        env: SignedEnvelope,
        code: Code,
    ) -> Result<tonic::Status, Box<dyn std::error::Error + Send + Sync>> {
        let status = self.refused_raw(what, via, env, code).await?;
        self.still_serves(via.1).await?;
        Ok(status)
    }

    async fn refused_raw(
        &mut self,
        what: &str,
        (as_agency, target): (&'static str, &'static str),
        env: SignedEnvelope,
        code: Code,
    ) -> Result<tonic::Status, Box<dyn std::error::Error + Send + Sync>> {
        let before = snapshot(self.api(target)).await?;
        let mut peer = self.peer(as_agency, target).await?;
        let status = match peer.deliver(env).await {
            Ok(r) => panic!("{what}: accepted, with receipt {:?}", r.into_inner()),
            Err(s) => s,
        };
        println!(
            "{what}: {:?} / {:?} — {}",
            status.code(),
            reason_of(&status),
            status.message()
        );
        assert_eq!(status.code(), code, "{what}: code ({})", status.message());
        let after = snapshot(self.api(target)).await?;
        assert_eq!(
            before, after,
            "{what}: the refusal changed {target}'s store"
        );
        self.refusals += 1;
        Ok(status)
    }

    /// Stops the federation and checks every store offline; returns each node's audit entries.
    async fn finish(
        self,
    ) -> Result<
        BTreeMap<&'static str, Vec<kurzdraht_ledger::records::AuditEntry>>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let mut audit = BTreeMap::new();
        let dirs: Vec<(&'static str, PathBuf)> = self
            .cfg
            .iter()
            .map(|(a, c)| (*a, c.data_dir.clone()))
            .collect();
        let mut personal = vec![
            GIVEN.to_string(),
            FAMILY.to_string(),
            OTHER_GIVEN.to_string(),
            OTHER_FAMILY.to_string(),
            OLD_GIVEN.to_string(),
            OLD_FAMILY.to_string(),
            OLD_DOB.to_string(),
            self.person.date_of_birth.clone(),
            dob_of_age(19),
            dob_of_age(21),
        ];
        personal.dedup();
        println!(
            "{} refusals; audited per node: {:?}",
            self.refusals, self.audited
        );
        drop(self.api);
        drop(self.peers);
        self.fed.shutdown().await?;
        for (agency, dir) in dirs {
            let ledger = Ledger::open(&dir)?;
            let report = ledger
                .verify_audit()
                .unwrap_or_else(|e| panic!("{agency}: audit chain does not verify: {e}"));
            // (Norderstedt may have seen no event at all in some tests: an empty chain is valid.)
            let entries = ledger.audit_entries()?;
            assert_eq!(
                report.entries,
                entries.len() as u64,
                "{agency}: chain length"
            );
            let mut refused: Vec<&str> = entries
                .iter()
                .filter(|e| e.event == "inbox.refused")
                .map(|e| e.detail.as_str())
                .collect();
            refused.sort_unstable();
            let mut expected = self.audited.get(agency).cloned().unwrap_or_default();
            expected.sort_unstable();
            assert_eq!(
                refused, expected,
                "{agency}: inbox.refused audit entries (reason codes)"
            );
            for e in &entries {
                let text = format!("{e:?}");
                for p in &personal {
                    assert!(
                        !text.contains(p.as_str()),
                        "{agency}: audit entry {} holds personal data {p:?}",
                        e.seq
                    );
                }
            }
            audit.insert(agency, entries);
        }
        Ok(audit)
    }
}

/// 1 + 2: the baseline, an exact duplicate, and a different envelope under a used message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_duplicate_and_message_id_conflict() -> TestResult {
    let mut lab = Lab::start().await?;
    let env = lab.valid_envelope(JA);
    let hdr = EnvelopeHeader::decode(env.header.as_slice())?;
    let mut jc = lab.peer(JC, JA).await?;
    let before = inbox(lab.api(JA)).await?.len();

    let first = jc.deliver(env.clone()).await?.into_inner();
    let r = lab.check_receipt(&first, &env, JC, JA);
    assert_eq!(r.message_id, hdr.message_id);
    assert_eq!(r.envelope_sha256, envelope_hash(&env).to_vec());
    let held = inbox(lab.api(JA)).await?;
    assert_eq!(held.len(), before + 1);
    let item = held
        .iter()
        .find(|i| i.message_id == hdr.message_id)
        .expect("in the inbox");
    assert_eq!(item.envelope.as_ref(), Some(&env), "stored exactly as sent");
    assert_eq!(item.sender, JC);
    assert_eq!(item.consent_id, lab.consent_id);

    // The same envelope again: the original receipt, byte for byte; stored once.
    let again = jc.deliver(env.clone()).await?.into_inner();
    assert_eq!(again.encode_to_vec(), first.encode_to_vec());
    let held = inbox(lab.api(JA)).await?;
    assert_eq!(
        held.iter()
            .filter(|i| i.message_id == hdr.message_id)
            .count(),
        1
    );
    assert_eq!(held.len(), before + 1);

    // Same message id, different (validly signed) envelope.
    let mut body = certification_request(lab.person.clone());
    if let Some(Body::CertificationRequest(r)) = &mut body.body {
        r.reason = "Ein anderer Text unter derselben Nachrichtenkennung".into();
    }
    let mut h = hdr.clone();
    h.payload_sha256.clear();
    let conflict = seal(h, &body, &lab.key(JC));
    lab.refused(
        "same message id, different envelope",
        (JC, JA),
        conflict,
        Code::AlreadyExists,
        "message-id-conflict",
    )
    .await?;
    // Same header and payload with a signature of other bytes: the signature check comes
    // before the duplicate lookup, so this is refused as a forgery, not as a conflict.
    let mut resigned = env.clone();
    resigned.signature.push(0);
    lab.refused(
        "same envelope with a trailing byte on the signature",
        (JC, JA),
        resigned,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;
    // The original is still answered with the original receipt after all that.
    let third = jc.deliver(env).await?.into_inner();
    assert_eq!(third.encode_to_vec(), first.encode_to_vec());
    let audit = lab.finish().await?;
    let about = |event: &str| {
        audit[JA]
            .iter()
            .filter(|e| e.event == event && e.message_id == hdr.message_id)
            .count()
    };
    assert_eq!(about("inbox.received"), 1, "received once");
    assert_eq!(
        about("inbox.duplicate"),
        1,
        "two duplicates answered, the first audited"
    );
    Ok(())
}

/// 3 + 4 + garbage of 9: tampering, wrong keys, random bytes, empty envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_tampered_envelopes() -> TestResult {
    let mut lab = Lab::start().await?;
    let via = (JC, JA);

    let mut env = lab.valid_envelope(JA);
    env.signature[10] ^= 0x01;
    lab.refused(
        "signature with one bit flipped",
        via,
        env,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    let mut env = lab.valid_envelope(JA);
    let last = env.payload.len() - 1;
    env.payload[last] ^= 0x01;
    lab.refused(
        "payload altered after sealing",
        via,
        env,
        Code::Unauthenticated,
        "payload-hash-mismatch",
    )
    .await?;

    let mut env = lab.valid_envelope(JA);
    env.payload =
        certification_request(subject(OTHER_GIVEN, OTHER_FAMILY, &dob_of_age(19))).encode_to_vec();
    lab.refused(
        "payload swapped for another valid body",
        via,
        env,
        Code::Unauthenticated,
        "payload-hash-mismatch",
    )
    .await?;

    let env = lab.valid_envelope(JA);
    let mut h = EnvelopeHeader::decode(env.header.as_slice())?;
    h.created_at_ms -= 1;
    let mut forged = env.clone();
    forged.header = h.encode_to_vec();
    lab.refused(
        "header re-encoded with a changed time, old signature",
        via,
        forged,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    let env = lab.valid_envelope(JA);
    let mut forged = env.clone();
    // An unknown field appended: decodes to the same header, but the bytes differ.
    forged.header.extend_from_slice(&[0xa0, 0x06, 0x01]);
    lab.refused(
        "header with an appended unknown field, old signature",
        via,
        forged,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    let env = lab.valid_envelope(JA);
    let mut h = EnvelopeHeader::decode(env.header.as_slice())?;
    h.consent_id = new_id();
    let mut forged = env.clone();
    forged.header = h.encode_to_vec();
    lab.refused(
        "header re-encoded with another consent id, old signature",
        via,
        forged,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    // 4. JC's TLS identity, envelope claiming sender JC but signed with Norderstedt's key.
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JN),
    );
    assert_eq!(env.signer, JC);
    lab.refused(
        "signed by Norderstedt's key, claiming the Jobcenter",
        via,
        env,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    // A key of nobody in the directory.
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &SigningKey::generate()?,
    );
    lab.refused(
        "signed by a fresh key nobody pinned",
        via,
        env,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    // The Jugendamt's own key, replayed back at it under the Jobcenter's name.
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JA),
    );
    lab.refused(
        "signed by the receiver's own key",
        via,
        env,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    // 9. Garbage.
    for (i, (h, p, s)) in [(200, 300, 64), (0, 0, 64), (4000, 1000, 0), (1, 1, 1)]
        .into_iter()
        .enumerate()
    {
        let env = SignedEnvelope {
            header: random_bytes(h, 11 + i as u64),
            payload: random_bytes(p, 23 + i as u64),
            signature: random_bytes(s, 37 + i as u64),
            signer: JC.into(),
        };
        lab.refused(
            &format!("random bytes ({h}/{p}/{s})"),
            via,
            env,
            Code::Unauthenticated,
            "bad-signature",
        )
        .await?;
    }
    let env = lab.valid_envelope(JA);
    let garbage_sig = SignedEnvelope {
        signature: random_bytes(64, 99),
        ..env
    };
    lab.refused(
        "valid header and payload, random signature",
        via,
        garbage_sig,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    lab.refused(
        "empty envelope (no signer)",
        via,
        SignedEnvelope::default(),
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    lab.refused(
        "empty envelope naming the Jobcenter as signer",
        via,
        SignedEnvelope {
            signer: JC.into(),
            ..Default::default()
        },
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;
    lab.finish().await?;
    Ok(())
}

/// 5, 6, 7: TLS identity ↔ signer binding, recipient, clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_binding_routing_and_clock() -> TestResult {
    let mut lab = Lab::start().await?;

    // 5. Norderstedt's certificate, an envelope genuinely sealed by the Jobcenter (a replay
    // of a captured message through another agency's connection).
    let env = lab.valid_envelope(JA);
    assert_eq!(env.signer, JC);
    lab.refused(
        "Norderstedt's TLS certificate, envelope sealed by the Jobcenter",
        (JN, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;

    // ... with the signer hint lied about as well.
    let mut env = lab.valid_envelope(JA);
    env.signer = JN.into();
    lab.refused(
        "Norderstedt's certificate, Jobcenter's envelope, signer hint = Norderstedt",
        (JN, JA),
        env,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await?;

    // The reverse trick: signer hint and key are Norderstedt's (matching its certificate),
    // but the signed header names the Jobcenter as sender.
    let mut env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JN),
    );
    env.signer = JN.into();
    lab.refused(
        "signed by Norderstedt, header claims the Jobcenter",
        (JN, JA),
        env,
        Code::PermissionDenied,
        "sender-mismatch",
    )
    .await?;

    // Jobcenter's certificate, signer hint Norderstedt.
    let mut env = seal(
        header(MessageKind::CertificationRequest, JN, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JN),
    );
    env.signer = JN.into();
    lab.refused(
        "Jobcenter's certificate, envelope sealed by Norderstedt",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;

    // 6. Addressed to Norderstedt, delivered to the Kreis office.
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JN, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JC),
    );
    lab.refused(
        "addressed to Norderstedt, delivered to the Kreis office",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    // Addressed to the Jobcenter itself (a reflection).
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JC, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JC),
    );
    lab.refused(
        "addressed to the sender itself",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;

    // 7. Clock.
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.created_at_ms = clock::now_ms() - 9 * clock::DAY_MS;
    let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
    lab.refused(
        "created 9 days ago (replay window 8 days)",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.created_at_ms = clock::now_ms() + 60 * 60 * 1000;
    let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
    // A sender whose clock is ahead: "try again" (UNAVAILABLE, clock-skew), never final —
    // the same envelope is accepted once the clocks agree.
    lab.refused(
        "created 1 hour in the future (skew 5 min)",
        (JC, JA),
        env,
        Code::Unavailable,
        "clock-skew",
    )
    .await?;
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.created_at_ms = i64::MIN;
    let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
    lab.refused(
        "created at i64::MIN",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.created_at_ms = i64::MAX;
    let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
    lab.refused(
        "created at i64::MAX",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;

    // Message ids that are not canonical UUIDv7.
    for bad in [
        String::new(),
        "not-a-uuid".to_string(),
        "00000000-0000-4000-8000-000000000000".to_string(),
        new_id().to_uppercase(),
    ] {
        let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
        h.message_id = bad.clone();
        let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
        lab.refused(
            &format!("message id {bad:?}"),
            (JC, JA),
            env,
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    }
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.in_reply_to = "../../etc/passwd".into();
    let env = seal(h, &certification_request(lab.person.clone()), &lab.key(JC));
    lab.refused(
        "in_reply_to that is no message id",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;
    lab.finish().await?;
    Ok(())
}

/// 8 and the consent messages of 9: consent and policy as the receiver decides them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_and_policy_at_the_receiver() -> TestResult {
    let mut lab = Lab::start().await?;
    let jc_key = lab.key(JC);

    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &new_id()),
        &certification_request(lab.person.clone()),
        &jc_key,
    );
    lab.refused(
        "consent the receiver does not hold",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "no-consent",
    )
    .await?;
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, ""),
        &certification_request(lab.person.clone()),
        &jc_key,
    );
    lab.refused(
        "no consent id at all",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "no-consent",
    )
    .await?;
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(subject(OTHER_GIVEN, OTHER_FAMILY, &dob_of_age(19))),
        &jc_key,
    );
    lab.refused(
        "replicated consent, other person",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "consent-other-subject",
    )
    .await?;
    let mut twin = lab.person.clone();
    twin.date_of_birth = dob_of_age(21);
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(twin),
        &jc_key,
    );
    lab.refused(
        "replicated consent, same name, other date of birth",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "consent-other-subject",
    )
    .await?;
    let env = seal(
        header(MessageKind::QualificationReferral, JC, JA, &lab.consent_id),
        &MessageBody {
            body: Some(Body::QualificationReferral(pb::QualificationReferral {
                subject: Some(lab.person.clone()),
                reason: "Berufsorientierung".into(),
                measure: "Berufsvorbereitung".into(),
                contact: "Herr Jensen".into(),
                respond_by: String::new(),
            })),
        },
        &jc_key,
    );
    lab.refused(
        "replicated consent, other purpose",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "consent-other-purpose",
    )
    .await?;

    // Policy at the receiver.
    let env = seal(
        header(MessageKind::MoveOutCertification, JC, JA, &lab.consent_id),
        &move_out_certification(lab.person.clone()),
        &jc_key,
    );
    lab.refused(
        "the Jobcenter certifies a move-out",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let env = seal(
        header(MessageKind::CertificationRequest, JN, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &lab.key(JN),
    );
    lab.refused(
        "a Jugendamt sends a CertificationRequest to a Jugendamt",
        (JN, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &certification_request(subject(OLD_GIVEN, OLD_FAMILY, OLD_DOB)),
        &jc_key,
    );
    lab.refused(
        "U25 violation (subject born 1979)",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "over-age",
    )
    .await?;
    let mut body = certification_request(lab.person.clone());
    if let Some(Body::CertificationRequest(r)) = &mut body.body {
        r.caseworker = String::new();
    }
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &body,
        &jc_key,
    );
    lab.refused(
        "required field missing",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;

    // At the Jobcenter: Norderstedt certifies for a person whose consent names only the Kreis office.
    let env = seal(
        header(MessageKind::MoveOutCertification, JN, JC, &lab.consent_id),
        &move_out_certification(lab.person.clone()),
        &lab.key(JN),
    );
    lab.refused(
        "Norderstedt cites a consent that does not name it",
        (JN, JC),
        env,
        Code::FailedPrecondition,
        "consent-other-sender",
    )
    .await?;

    // Consent messages.
    let forged_consent = |recording: &str, recipients: Vec<String>, id: &str| pb::ConsentRecord {
        consent_id: id.into(),
        subject: Some(subject(OTHER_GIVEN, OTHER_FAMILY, &dob_of_age(19))),
        given_by: pb::ConsentGiver::Person as i32,
        guardian_name: String::new(),
        recording_agency: recording.into(),
        recipients,
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: clock::now_ms() - 1000,
        valid_until_ms: clock::now_ms() + 30 * clock::DAY_MS,
        evidence_reference: "gefälscht".into(),
        recorded_by: "niemand".into(),
        recorded_at_ms: clock::now_ms(),
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::Address as i32,
        ],
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![0; 32],
        supersedes: String::new(),
    };
    let notice = |c: pb::ConsentRecord| MessageBody {
        body: Some(Body::ConsentNotice(pb::ConsentNotice { consent: Some(c) })),
    };
    let id = new_id();
    let env = seal(
        header(MessageKind::ConsentNotice, JC, JA, &id),
        &notice(forged_consent(JN, vec![JA.into(), JC.into()], &id)),
        &jc_key,
    );
    lab.refused(
        "ConsentNotice from the Jobcenter claiming Norderstedt recorded it",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let id = new_id();
    let env = seal(
        header(MessageKind::ConsentNotice, JC, JA, &id),
        &notice(forged_consent(JC, vec![JN.into()], &id)),
        &jc_key,
    );
    lab.refused(
        "ConsentNotice that does not name the receiver",
        (JC, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    // Norderstedt tries to overwrite the Jobcenter's replicated consent under the same id.
    let env = seal(
        header(MessageKind::ConsentNotice, JN, JA, &lab.consent_id),
        &notice(forged_consent(JN, vec![JA.into()], &lab.consent_id)),
        &lab.key(JN),
    );
    lab.refused(
        "ConsentNotice re-using an existing consent id",
        (JN, JA),
        env,
        Code::AlreadyExists,
        "consent-exists",
    )
    .await?;
    let id = new_id();
    let env = seal(
        header(MessageKind::ConsentNotice, JC, JA, &new_id()),
        &notice(forged_consent(JC, vec![JA.into()], &id)),
        &jc_key,
    );
    lab.refused(
        "ConsentNotice whose header cites another consent id",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;
    let withdrawal = |id: &str| MessageBody {
        body: Some(Body::ConsentWithdrawal(pb::ConsentWithdrawal {
            withdrawal: Some(pb::ConsentWithdrawalRecord {
                consent_id: id.into(),
                withdrawn_at_ms: clock::now_ms(),
                recorded_by: "niemand".into(),
                manner: "gefälscht".into(),
            }),
        })),
    };
    let env = seal(
        header(MessageKind::ConsentWithdrawal, JN, JA, &lab.consent_id),
        &withdrawal(&lab.consent_id),
        &lab.key(JN),
    );
    lab.refused(
        "Norderstedt withdraws the Jobcenter's consent",
        (JN, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let env = seal(
        header(MessageKind::ConsentWithdrawal, JA, JC, &lab.consent_id),
        &withdrawal(&lab.consent_id),
        &lab.key(JA),
    );
    lab.refused(
        "a recipient withdraws the recording agency's consent at the recording agency",
        (JA, JC),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let unknown = new_id();
    let env = seal(
        header(MessageKind::ConsentWithdrawal, JC, JA, &unknown),
        &withdrawal(&unknown),
        &jc_key,
    );
    lab.refused(
        "withdrawal of a consent the receiver does not hold",
        (JC, JA),
        env,
        Code::FailedPrecondition,
        "no-consent",
    )
    .await?;
    let env = seal(
        header(MessageKind::ConsentWithdrawal, JC, JA, &new_id()),
        &withdrawal(&lab.consent_id),
        &jc_key,
    );
    lab.refused(
        "withdrawal whose header cites another consent id",
        (JC, JA),
        env,
        Code::InvalidArgument,
        "invalid-argument",
    )
    .await?;
    // A replicated consent passes the same validation as one recorded at the receiver, and
    // its notice discloses only what its own categories cover. Each refusal has a positive
    // control: the same notice, mended, is accepted.
    let notice_from_jc = |c: pb::ConsentRecord| {
        seal(
            header(MessageKind::ConsentNotice, JC, JA, &c.consent_id),
            &notice(c),
            &jc_key,
        )
    };
    let mut uncovered = forged_consent(JC, vec![JA.into()], &new_id());
    uncovered.categories = vec![pb::DataCategory::Identity as i32];
    let status = lab
        .refused_with(
            "ConsentNotice carrying an address its categories do not cover",
            (JC, JA),
            notice_from_jc(uncovered.clone()),
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.consent.subject.address"),
        "{}",
        status.message()
    );
    uncovered.categories.push(pb::DataCategory::Address as i32);
    let covered = uncovered;
    lab.accepted(
        "the same notice with ADDRESS",
        (JC, JA),
        notice_from_jc(covered.clone()),
    )
    .await?;

    let mut child = forged_consent(JC, vec![JA.into()], &new_id());
    child.subject = Some(subject(OTHER_GIVEN, OTHER_FAMILY, &dob_of_age(14)));
    let status = lab
        .refused_with(
            "ConsentNotice given personally by a 14-year-old",
            (JC, JA),
            notice_from_jc(child.clone()),
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.consent.given_by"),
        "{}",
        status.message()
    );
    child.given_by = pb::ConsentGiver::Guardian as i32;
    child.guardian_name = "Vormund Lorenzsen".into();
    let status = lab
        .refused_with(
            "ConsentNotice carrying a guardian's name without FAMILY_SITUATION",
            (JC, JA),
            notice_from_jc(child.clone()),
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.consent.guardian_name"),
        "{}",
        status.message()
    );
    child
        .categories
        .push(pb::DataCategory::FamilySituation as i32);
    lab.accepted(
        "the guardian's consent with FAMILY_SITUATION",
        (JC, JA),
        notice_from_jc(child),
    )
    .await?;

    let mut health = forged_consent(JC, vec![JA.into()], &new_id());
    health.categories.push(pb::DataCategory::Health as i32);
    let status = lab
        .refused_with(
            "ConsentNotice covering health data without explicit consent",
            (JC, JA),
            notice_from_jc(health.clone()),
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.consent.legal_basis"),
        "{}",
        status.message()
    );
    health.legal_basis = pb::LegalBasis::ExplicitConsentGdpr92A as i32;
    lab.accepted(
        "the same with explicit consent",
        (JC, JA),
        notice_from_jc(health),
    )
    .await?;

    // A replacement names a consent of the same controller about the same person.
    let mut cross = forged_consent(JN, vec![JA.into()], &new_id());
    cross.supersedes = covered.consent_id.clone();
    let env = seal(
        header(MessageKind::ConsentNotice, JN, JA, &cross.consent_id),
        &notice(cross),
        &lab.key(JN),
    );
    lab.refused(
        "Norderstedt's notice replacing the Jobcenter's consent",
        (JN, JA),
        env,
        Code::PermissionDenied,
        "permission-denied",
    )
    .await?;
    let mut other_person = forged_consent(JC, vec![JA.into()], &new_id());
    other_person.subject = Some(subject(OLD_GIVEN, OLD_FAMILY, &dob_of_age(21)));
    other_person.supersedes = covered.consent_id.clone();
    let status = lab
        .refused_with(
            "a notice replacing a consent of another person",
            (JC, JA),
            notice_from_jc(other_person),
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.consent.supersedes"),
        "{}",
        status.message()
    );
    let mut replacement = forged_consent(JC, vec![JA.into()], &new_id());
    replacement.supersedes = covered.consent_id.clone();
    lab.accepted(
        "the same person's replacement",
        (JC, JA),
        notice_from_jc(replacement.clone()),
    )
    .await?;

    // Every text of a withdrawal has a limit.
    let mut long = withdrawal(&replacement.consent_id);
    if let Some(Body::ConsentWithdrawal(w)) = long.body.as_mut() {
        if let Some(r) = w.withdrawal.as_mut() {
            r.manner = "x".repeat(501);
        }
    }
    let env = seal(
        header(
            MessageKind::ConsentWithdrawal,
            JC,
            JA,
            &replacement.consent_id,
        ),
        &long,
        &jc_key,
    );
    let status = lab
        .refused_with(
            "a withdrawal with a 501-character manner",
            (JC, JA),
            env,
            Code::InvalidArgument,
            "invalid-argument",
        )
        .await?;
    assert!(
        status.message().contains("body.withdrawal.manner"),
        "{}",
        status.message()
    );
    let env = seal(
        header(
            MessageKind::ConsentWithdrawal,
            JC,
            JA,
            &replacement.consent_id,
        ),
        &withdrawal(&replacement.consent_id),
        &jc_key,
    );
    lab.accepted("the same withdrawal with a short manner", (JC, JA), env)
        .await?;

    // The consent is still in force at the Kreis office after all of this.
    let held = lab
        .api(JA)
        .list_consents(pb::ListConsentsRequest::default())
        .await?
        .into_inner();
    assert!(held.consents.iter().any(|c| c
        .consent
        .as_ref()
        .is_some_and(|r| r.consent_id == lab.consent_id
            && r.recording_agency == JC
            && r.subject.as_ref() == Some(&lab.person))
        && c.withdrawal.is_none()
        && c.state == pb::ConsentState::ConsentInForce as i32));
    lab.finish().await?;
    Ok(())
}

/// 9 (malformed) + 10: unknown kinds, kind/body mismatch, oversize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize() -> TestResult {
    let mut lab = Lab::start().await?;
    let jc_key = lab.key(JC);
    let via = (JC, JA);

    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.kind = 99;
    let env = seal(h, &certification_request(lab.person.clone()), &jc_key);
    lab.refused(
        "kind 99, validly signed",
        via,
        env,
        Code::InvalidArgument,
        "malformed",
    )
    .await?;
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.kind = 0;
    let env = seal(h, &certification_request(lab.person.clone()), &jc_key);
    lab.refused(
        "kind unspecified, validly signed",
        via,
        env,
        Code::InvalidArgument,
        "malformed",
    )
    .await?;
    let env = seal(
        header(MessageKind::MoveOutDecision, JC, JA, &lab.consent_id),
        &certification_request(lab.person.clone()),
        &jc_key,
    );
    lab.refused(
        "kind MoveOutDecision, body CertificationRequest",
        via,
        env,
        Code::InvalidArgument,
        "kind-mismatch",
    )
    .await?;
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &MessageBody { body: None },
        &jc_key,
    );
    lab.refused(
        "validly signed, empty body",
        via,
        env,
        Code::InvalidArgument,
        "malformed",
    )
    .await?;
    // A validly signed header whose bytes are no EnvelopeHeader at all.
    let env = SignedEnvelope {
        header: vec![0xff; 40],
        payload: vec![],
        signature: raw_sign(&jc_key, &[0xff; 40]),
        signer: JC.into(),
    };
    lab.refused(
        "validly signed, undecodable header",
        via,
        env,
        Code::InvalidArgument,
        "malformed",
    )
    .await?;
    // A validly signed header over a payload that does not decode as a MessageBody.
    let payload = vec![0xff; 32];
    let mut h = header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id);
    h.payload_sha256 = sha256(&payload);
    let header_bytes = h.encode_to_vec();
    let env = SignedEnvelope {
        signature: raw_sign(&jc_key, &header_bytes),
        header: header_bytes,
        payload,
        signer: JC.into(),
    };
    lab.refused(
        "validly signed, undecodable payload",
        via,
        env,
        Code::InvalidArgument,
        "malformed",
    )
    .await?;

    // 10. Oversize. Limits: header 4 KiB, payload 256 KiB; the transport limit is the larger
    // of header+payload+1 KiB and a full DeliverBatch (1 MiB + 64 KiB).
    let limits = lab.cfg(JA).limits.envelope;
    let transport_limit = kurzdraht_node::rpc::peer_exchange::transport_limit(&limits);
    assert!(transport_limit >= limits.max_header_bytes + limits.max_payload_bytes + 1024);
    let mut body = certification_request(lab.person.clone());
    if let Some(Body::CertificationRequest(r)) = &mut body.body {
        r.reason = "x".repeat(limits.max_payload_bytes + 1);
    }
    let env = seal(
        header(MessageKind::CertificationRequest, JC, JA, &lab.consent_id),
        &body,
        &jc_key,
    );
    assert!(env.payload.len() > limits.max_payload_bytes);
    assert!(env.encoded_len() < transport_limit);
    lab.refused(
        "payload just over 256 KiB, validly signed",
        via,
        env,
        Code::ResourceExhausted,
        "too-large",
    )
    .await?;
    let env = SignedEnvelope {
        header: random_bytes(limits.max_header_bytes + 1, 5),
        payload: vec![],
        signature: random_bytes(64, 6),
        signer: JC.into(),
    };
    lab.refused(
        "header just over 4 KiB",
        via,
        env,
        Code::ResourceExhausted,
        "too-large",
    )
    .await?;
    // Over the transport limit, tonic's decoder refuses before the node sees anything (so no
    // audit entry); the node's response layer turns tonic's OUT_OF_RANGE into the contract's
    // RESOURCE_EXHAUSTED with the reason code too-large.
    let env = SignedEnvelope {
        header: vec![],
        payload: vec![0x41; 2 * 1024 * 1024],
        signature: vec![],
        signer: JC.into(),
    };
    let status = lab
        .refused_by_transport(
            "2 MiB payload (over the transport limit)",
            via,
            env,
            Code::ResourceExhausted,
        )
        .await?;
    assert_eq!(reason_of(&status), Some("too-large"));
    // Exactly one byte over the transport limit.
    let mut env = SignedEnvelope {
        header: vec![],
        payload: vec![],
        signature: vec![],
        signer: JC.into(),
    };
    let overhead = env.encoded_len() + 1 + 4; // tag + up to 4 length bytes
    env.payload = vec![0x42; transport_limit + 1 - overhead];
    while env.encoded_len() <= transport_limit {
        env.payload.push(0x42);
    }
    assert_eq!(env.encoded_len(), transport_limit + 1);
    lab.refused_by_transport(
        "one byte over the transport limit",
        via,
        env,
        Code::ResourceExhausted,
    )
    .await?;
    lab.finish().await?;
    Ok(())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Signs `header` bytes exactly as the envelope crate does (domain prefix + header), for
/// envelopes that `seal` cannot make (bytes that are no encoded header).
fn raw_sign(key: &SigningKey, header: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let hex = key.to_hex();
    let seed: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex seed"))
        .collect();
    let seed: [u8; 32] = seed.try_into().expect("32-byte seed");
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    assert_eq!(dalek.verifying_key().to_bytes().len(), 32);
    let mut input = kurzdraht_envelope::seal::ENVELOPE_DOMAIN.to_vec();
    input.extend_from_slice(header);
    dalek.sign(&input).to_bytes().to_vec()
}

/// 11. Transport: no client certificate, a certificate of another CA, plaintext HTTP/2,
/// and federation-CA certificates that name no or two agencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_without_a_federation_identity() -> TestResult {
    let mut lab = Lab::start().await?;
    let target = lab.cfg(JA).peer_addr;
    let ca = Certificate::from_pem(&lab.cfg(JC).tls.ca_pem);

    // Control: the test's own hand-built client configuration, with the Jobcenter's real
    // identity, delivers. Each refusal below changes only the identity (or drops TLS), so
    // it is refused for that and not for a mistake in the configuration around it.
    let jobcenter = Identity::from_pem(&lab.cfg(JC).tls.cert_pem, &lab.cfg(JC).tls.key_pem);
    lab.transport_accepted(
        "the Jobcenter's real certificate",
        format!("https://{target}"),
        Some(hand_built_tls(&ca, Some(jobcenter))),
    )
    .await?;

    // No client certificate.
    let no_cert = hand_built_tls(&ca, None);
    lab.transport_refused(
        "no client certificate",
        format!("https://{target}"),
        Some(no_cert),
    )
    .await?;

    // A client certificate for "jobcenter-segeberg" from a CA of the attacker's own.
    let (foreign_ca, foreign_ca_key) = make_ca("kurzdraht federation CA")?;
    let identity = make_leaf(&foreign_ca, foreign_ca_key, &[JC])?;
    let foreign = hand_built_tls(&ca, Some(identity));
    lab.transport_refused(
        "client certificate for the Jobcenter from a foreign CA",
        format!("https://{target}"),
        Some(foreign),
    )
    .await?;

    // The foreign CA's root sent along as well (a chain the server does not trust).
    let (foreign_ca2, foreign_ca_key2) = make_ca("kurzdraht federation CA")?;
    let leaf = make_leaf(&foreign_ca2, foreign_ca_key2, &[JC, JN])?;
    let chained = hand_built_tls(&ca, Some(leaf));
    lab.transport_refused(
        "foreign-CA certificate naming the Jobcenter and Norderstedt",
        format!("https://{target}"),
        Some(chained),
    )
    .await?;

    // Plaintext HTTP/2 to the TLS port.
    lab.transport_refused("plaintext HTTP/2", format!("http://{target}"), None)
        .await?;

    // Certificates of the real federation CA (as if the CA key leaked or was misused) that
    // name no agency of the directory, or two: TLS succeeds, the node refuses.
    // (rcgen without x509-parser cannot read the CA certificate back; the issuer is its
    // distinguished name and key, rebuilt exactly as `pki::init` made them.)
    let fed_ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(lab.fed.dir.join("ca.key"))?)?;
    let issuer = rcgen::Issuer::new(ca_params("kurzdraht federation CA")?, fed_ca_key);
    for (what, names) in [
        (
            "federation certificate naming no agency",
            vec!["mallory-agency"],
        ),
        ("federation certificate naming two agencies", vec![JC, JN]),
    ] {
        let (cert_pem, key_pem) = leaf_pem(&issuer, &names)?;
        let cfg = hand_built_tls(&ca, Some(Identity::from_pem(cert_pem, key_pem)));
        let channel = Endpoint::from_shared(format!("https://{target}"))?
            .tls_config(cfg)?
            .connect()
            .await?;
        let before = snapshot(lab.api(JA)).await?;
        let status = PeerExchangeClient::new(channel)
            .deliver(lab.valid_envelope(JA))
            .await
            .expect_err(what);
        println!(
            "{what}: {:?} / {:?} — {}",
            status.code(),
            reason_of(&status),
            status.message()
        );
        assert_eq!(status.code(), Code::PermissionDenied, "{what}");
        assert_eq!(reason_of(&status), Some("permission-denied"), "{what}");
        assert_eq!(before, snapshot(lab.api(JA)).await?, "{what}");
        // A refusal the node decided: audited like every other one.
        lab.audited.entry(JA).or_default().push("permission-denied");
        lab.refusals += 1;
        lab.still_serves(JA).await?;
    }
    // An expired certificate of the real federation CA naming the Jobcenter.
    let (cert_pem, key_pem) = leaf_pem_valid(
        &issuer,
        &[JC],
        rcgen::date_time_ymd(2020, 1, 1),
        rcgen::date_time_ymd(2021, 1, 1),
    )?;
    let expired = hand_built_tls(&ca, Some(Identity::from_pem(cert_pem, key_pem)));
    lab.transport_refused(
        "expired federation certificate for the Jobcenter",
        format!("https://{target}"),
        Some(expired),
    )
    .await?;
    lab.finish().await?;
    Ok(())
}

type CaPair = (String, rcgen::CertificateParams);

fn make_ca(cn: &str) -> Result<(CaPair, rcgen::KeyPair), Box<dyn std::error::Error + Send + Sync>> {
    let key = rcgen::KeyPair::generate()?;
    let params = ca_params(cn)?;
    let cert = params.self_signed(&key)?;
    Ok(((cert.pem(), params), key))
}

fn ca_params(cn: &str) -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn make_leaf(
    ca: &CaPair,
    ca_key: rcgen::KeyPair,
    names: &[&str],
) -> Result<Identity, Box<dyn std::error::Error + Send + Sync>> {
    let issuer = rcgen::Issuer::new(ca.1.clone(), ca_key);
    let (cert, key) = leaf_pem(&issuer, names)?;
    Ok(Identity::from_pem(cert, key))
}

fn leaf_pem_valid<S: rcgen::SigningKey>(
    issuer: &rcgen::Issuer<'_, S>,
    names: &[&str],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf_pem<S: rcgen::SigningKey>(
    issuer: &rcgen::Issuer<'_, S>,
    names: &[&str],
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The client configuration the transport tests build by hand (not `tls::peer_client_tls`):
/// the federation CA as trust anchor, the Jugendamt as server name, and `identity` (if any)
/// as client certificate.
fn hand_built_tls(ca: &Certificate, identity: Option<Identity>) -> ClientTlsConfig {
    let cfg = ClientTlsConfig::new().ca_certificate(ca.clone());
    match identity {
        Some(identity) => cfg.identity(identity),
        None => cfg,
    }
    .domain_name(JA)
}

/// Connects with `tls` (or in plaintext) to `url` and delivers `env`, within 10 s.
async fn deliver_over(
    url: String,
    tls: Option<ClientTlsConfig>,
    env: SignedEnvelope,
) -> Result<
    Result<tonic::Response<SignedReceipt>, Box<dyn std::error::Error + Send + Sync>>,
    tokio::time::error::Elapsed,
> {
    let attempt = async {
        let mut endpoint = Endpoint::from_shared(url)?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        let r = PeerExchangeClient::new(channel).deliver(env).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(r)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await
}

impl Lab {
    /// The positive control of [`Lab::transport_refused`]: connecting with `tls` to `url`
    /// and delivering a valid envelope from the Jobcenter succeeds, its receipt verifies
    /// and the envelope is in the Jugendamt's inbox.
    async fn transport_accepted(
        &mut self,
        what: &str,
        url: String,
        tls: Option<ClientTlsConfig>,
    ) -> TestResult {
        let env = self.valid_envelope(JA);
        let receipt = match deliver_over(url, tls, env.clone()).await {
            Err(_) => panic!("control {what}: no answer within 10 s"),
            Ok(Err(e)) => panic!("control {what}: refused: {e:?}"),
            Ok(Ok(r)) => r.into_inner(),
        };
        let r = self.check_receipt(&receipt, &env, JC, JA);
        let held = inbox(self.api(JA)).await?;
        assert!(
            held.iter()
                .any(|i| i.message_id == r.message_id && i.envelope.as_ref() == Some(&env)),
            "control {what}: the delivery is not in {JA}'s inbox"
        );
        Ok(())
    }

    /// Connecting with `tls` (or in plaintext) to `url` and delivering a valid envelope
    /// must fail somewhere (handshake or call), within 10 s, storing nothing. Pair it with
    /// [`Lab::transport_accepted`] for the same configuration with a valid identity.
    async fn transport_refused(
        &mut self,
        what: &str,
        url: String,
        tls: Option<ClientTlsConfig>,
    ) -> TestResult {
        let before = snapshot(self.api(JA)).await?;
        let env = self.valid_envelope(JA);
        match deliver_over(url, tls, env).await {
            Err(_) => panic!("{what}: neither refused nor answered within 10 s"),
            Ok(Ok(r)) => panic!("{what}: accepted, with receipt {:?}", r.into_inner()),
            Ok(Err(e)) => {
                let detail = match e.downcast_ref::<tonic::Status>() {
                    Some(s) => format!(
                        "call failed: {:?} / {:?} — {}",
                        s.code(),
                        reason_of(s),
                        s.message()
                    ),
                    None => format!("connect failed: {e:?}"),
                };
                println!("{what}: {detail}");
            }
        }
        assert_eq!(before, snapshot(self.api(JA)).await?, "{what}");
        self.refusals += 1;
        self.still_serves(JA).await
    }
}
