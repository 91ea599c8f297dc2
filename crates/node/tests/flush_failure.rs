//! A flush that fails after its transaction committed: the queueing is undone (the IT
//! system is told `not-stored`, submit again), and nothing undone is sent — also not by a
//! delivery round that read the outbox before the undo (held at its clock read by a trap
//! clock, so the interleaving is certain, not timed). A replacing consent whose flush
//! failed is undone with its notices, so it can be recorded again.
#![allow(clippy::unwrap_used)]

use kurzdraht_node::clock::{Clock, ManualClock};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::peer_transport::PeerTransport;
use kurzdraht_node::service::delivery::LaneWorker;
use kurzdraht_node::{pki, Node};
use kurzdraht_proto::v1::{
    self as pb, message_body::Body, BatchOutcome, EnvelopeBatch, EnvelopeHeader, SignedEnvelope,
    SignedReceipt,
};
use prost::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tonic::Status;

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
/// The IT system the calls come from (scopes idempotency keys).
const IT: &str = "jobcenter-segeberg-it";

/// A manual clock with a trap: once armed, the next `now_ms` blocks its thread until opened.
struct TrapClock {
    time: Arc<ManualClock>,
    armed: AtomicBool,
    state: Mutex<(bool, bool)>, // (entered, open)
    cv: Condvar,
}

impl TrapClock {
    fn new(ms: i64) -> Arc<Self> {
        Arc::new(Self {
            time: ManualClock::at(ms),
            armed: AtomicBool::new(false),
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        })
    }
    fn arm(&self) {
        *self.state.lock().unwrap() = (false, false);
        self.armed.store(true, Ordering::SeqCst);
    }
    fn wait_entered(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }
    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl Clock for TrapClock {
    fn now_ms(&self) -> i64 {
        if self.armed.swap(false, Ordering::SeqCst) {
            let mut s = self.state.lock().unwrap();
            s.0 = true;
            self.cv.notify_all();
            while !s.1 {
                s = self.cv.wait(s).unwrap();
            }
        }
        self.time.now_ms()
    }
}

/// Records the message ids handed to it; answers "unavailable".
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl PeerTransport for Recorder {
    async fn deliver_batch(&self, batch: EnvelopeBatch) -> Result<BatchOutcome, Status> {
        for e in &batch.envelopes {
            let h = EnvelopeHeader::decode(e.header.as_slice()).unwrap();
            self.sent.lock().unwrap().push(h.message_id);
        }
        Err(Status::unavailable("test peer"))
    }
    async fn deliver(&self, e: SignedEnvelope) -> Result<SignedReceipt, Status> {
        let h = EnvelopeHeader::decode(e.header.as_slice()).unwrap();
        self.sent.lock().unwrap().push(h.message_id);
        Err(Status::unavailable("test peer"))
    }
}

fn lena() -> pb::Subject {
    pb::Subject {
        given_name: "Lena".into(),
        family_name: "Hansen".into(),
        date_of_birth: "2005-04-12".into(),
        ..Default::default()
    }
}

fn consent_req(supersedes: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        subject: Some(lena()),
        given_by: pb::ConsentGiver::Person as i32,
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        evidence_reference: "Einwilligung/1".into(),
        recorded_by: "Herr Jensen".into(),
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::HousingSituation as i32,
        ],
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![7; 32],
        supersedes: supersedes.into(),
        ..Default::default()
    }
}

fn setup(dir: &std::path::Path) -> NodeConfig {
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let specs = pki::segeberg([(addr(1), addr(2)), (addr(3), addr(4)), (addr(5), addr(6))]);
    pki::init(dir, &specs).unwrap();
    NodeConfig::load(&dir.join(JC).join("node.toml")).unwrap()
}

/// A round that read the outbox before the undo and checks `unconfirmed` after it sends a
/// message whose submission was answered `not-stored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undone_submission_is_not_sent_by_a_round_that_read_it_before_the_undo() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let clock = TrapClock::new(kurzdraht_node::clock::now_ms());
    let node = Node::open_with_clock(&config, clock.clone()).unwrap();
    let consent = node
        .submission()
        .record_consent(IT, consent_req(""))
        .await
        .unwrap();
    let consent_id = consent.consent.unwrap().consent_id;
    let lane = node.ledger().lane_of(&consent_id).unwrap();

    let release = node.ledger().inject_flush_failure();
    let submitting = {
        let node = node.clone();
        let consent_id = consent_id.clone();
        tokio::spawn(async move {
            node.submission()
                .submit(
                    IT,
                    pb::SubmitRequest {
                        idempotency_key: String::new(),
                        recipient: JA.into(),
                        consent_id,
                        in_reply_to: String::new(),
                        body: Some(pb::MessageBody {
                            body: Some(Body::CertificationRequest(pb::CertificationRequest {
                                subject: Some(lena()),
                                reason: "einmal".into(),
                                respond_by: String::new(),
                                caseworker: "Herr Jensen".into(),
                            })),
                        }),
                    },
                )
                .await
        })
    };
    // Committed (notice + message queued), its flush held.
    while node.ledger().outbox_len(JA) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let transport = Arc::new(Recorder::default());
    let mut worker = LaneWorker::new(node.clone(), JA, lane, transport.clone());
    clock.arm();
    let round = tokio::spawn(async move { worker.step().await });
    // The round has read the outbox (notice + message) and stands at its clock read.
    {
        let c = clock.clone();
        tokio::task::spawn_blocking(move || c.wait_entered())
            .await
            .unwrap();
    }
    release.notify_one();
    let answer = submitting.await.unwrap();
    let err = answer.expect_err("the flush failed: the submission is refused");
    assert_eq!(err.reason_code(), "not-stored", "{err}");
    // The IT system was told nothing was queued. Now the round goes on.
    clock.open();
    round.await.unwrap().unwrap();
    let sent = transport.sent.lock().unwrap().clone();
    let msg = err.to_string();
    let id = msg
        .split('(')
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    let undone = [id.clone()];
    let st = node.submission().status(&id).unwrap();
    assert_eq!(st.state, pb::DeliveryState::Refused as i32, "{st:?}");
    assert_eq!(
        st.detail, "not-stored",
        "the round overwrote the undone message's status"
    );
    assert_eq!(st.attempts, 0, "{st:?}");
    assert!(
        !sent.contains(&undone[0]),
        "the undone message {} was handed to the peer after the IT system was told 'not-stored': sent {sent:?}",
        undone[0]
    );
}

/// A replacing RecordConsent whose flush fails is answered "nothing was queued; submit
/// again": the replacement is undone (the old consent in force again, the notices out of
/// the outbox), so the IT system's resubmission is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_whose_flush_failed_can_be_submitted_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let node =
        Node::open_with_clock(&config, ManualClock::at(kurzdraht_node::clock::now_ms())).unwrap();
    let first = node
        .submission()
        .record_consent(IT, consent_req(""))
        .await
        .unwrap();
    let old = first.consent.unwrap().consent_id;
    let queued_before = node.ledger().outbox_len(JA); // the first consent's notice
    let release = node.ledger().inject_flush_failure();
    let replacing = {
        let node = node.clone();
        let old = old.clone();
        tokio::spawn(async move {
            node.submission()
                .record_consent(IT, consent_req(&old))
                .await
        })
    };
    // Recorded (the old one marked superseded), its flush held.
    while node
        .ledger()
        .consent(&old)
        .unwrap()
        .unwrap()
        .superseded_by
        .is_empty()
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    release.notify_one();
    let err = replacing.await.unwrap().expect_err("the flush failed");
    assert_eq!(err.reason_code(), "not-stored", "{err}");
    let held = node.ledger().consent(&old).unwrap().unwrap();
    assert!(
        held.superseded_by.is_empty(),
        "the old consent stays replaced"
    );
    assert_eq!(
        node.ledger().outbox_len(JA),
        queued_before,
        "the undone replacement's notice is still queued"
    );
    // As told, the IT system submits the replacement again.
    let again = node
        .submission()
        .record_consent(IT, consent_req(&old))
        .await;
    assert!(
        again.is_ok(),
        "resubmitting the replacement after 'not-stored' was refused: {:?}",
        again.err().map(|e| (e.reason_code(), e.to_string()))
    );
}
