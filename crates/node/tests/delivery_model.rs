//! A property test of store-and-forward that drives the real delivery worker
//! ([`LaneWorker::step`]: batches, lanes, receipt verification, one transaction and one
//! flush per round; the steps run one after another, so the lane gate, which orders a round
//! against a concurrent withdrawal, is tested with real nodes in `tests/consent_edges.rs`) between two real nodes in this process: the
//! Jobcenter's, and the Kreis office's reception (`Node::receive_batch`) behind a transport
//! the test controls (peer down, replies lost). Both nodes run on manual clocks.
//!
//! Any interleaving of submissions under three persons' consents (three lanes or fewer),
//! rounds of any lane, outages, lost replies, redelivered duplicates, withdrawals, restarts
//! of either node and the passing of time ends — once the peer is back and every lane
//! drained — with every submitted message delivered exactly once (its receipt the one the
//! receiver holds) or stopped at the sender; nothing under a consent reaches the receiver
//! after its withdrawal was answered; each person's messages arrive in the order they were
//! submitted, after their consent notice; both audit chains verify.
//!
//! Restarts here are graceful (a dropped sled handle flushes): losing unflushed writes is
//! tested with SIGKILLed processes in `crates/ledger/tests/sigkill.rs` and `tests/crash.rs`.
#![allow(clippy::unwrap_used)]

use kurzdraht_node::clock::ManualClock;
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::peer_transport::PeerTransport;
use kurzdraht_node::rpc::peer_exchange::outcome_of;
use kurzdraht_node::service::delivery::LaneWorker;
use kurzdraht_node::{pki, Node};
use kurzdraht_proto::v1::{
    self as pb, message_body::Body, BatchOutcome, DeliveryState, EnvelopeBatch, MessageKind,
    SignedEnvelope, SignedReceipt,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tonic::Status;

/// The IT system the model's calls come from (their idempotency keys, if any, are its own).
const IT: &str = "jobcenter-segeberg-it";

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const PERSONS: usize = 3;
const LANES: u8 = kurzdraht_ledger::DELIVERY_LANES;

#[derive(Debug, Clone)]
enum Op {
    Submit(usize),
    Round(u8),
    Peer { up: bool },
    LoseReply,
    Duplicate(usize),
    Withdraw(usize),
    Tick(i64),
    RestartSender,
    RestartReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PERSONS).prop_map(Op::Submit),
        8 => (0..LANES).prop_map(Op::Round),
        2 => any::<bool>().prop_map(|up| Op::Peer { up }),
        2 => Just(Op::LoseReply),
        1 => (0usize..50).prop_map(Op::Duplicate),
        1 => (0..PERSONS).prop_map(Op::Withdraw),
        2 => (1i64..30_000).prop_map(Op::Tick),
        1 => Just(Op::RestartSender),
        1 => Just(Op::RestartReceiver),
    ]
}

/// The Kreis office as the Jobcenter's worker reaches it: its real reception, or nothing.
#[derive(Default)]
struct Link {
    receiver: Mutex<Option<Node>>,
    lose_reply: AtomicBool,
    /// Every envelope the receiver was handed, for redelivery.
    sent: Mutex<Vec<SignedEnvelope>>,
}

impl Link {
    fn receiver(&self) -> Result<Node, Status> {
        self.receiver
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Status::unavailable("the Kreis office is down"))
    }
}

#[tonic::async_trait]
impl PeerTransport for Link {
    async fn deliver_batch(&self, batch: EnvelopeBatch) -> Result<BatchOutcome, Status> {
        let node = self.receiver()?;
        self.sent
            .lock()
            .unwrap()
            .extend(batch.envelopes.iter().cloned());
        let answers = node.reception().receive_batch(JC, batch.envelopes).await;
        if self.lose_reply.swap(false, Ordering::SeqCst) {
            return Err(Status::unavailable("the reply was lost"));
        }
        Ok(BatchOutcome {
            outcomes: answers.into_iter().map(outcome_of).collect(),
        })
    }

    async fn deliver(&self, envelope: SignedEnvelope) -> Result<SignedReceipt, Status> {
        let node = self.receiver()?;
        Ok(node.reception().receive(JC, envelope).await?)
    }
}

fn person(i: usize) -> pb::Subject {
    pb::Subject {
        given_name: "Lena".into(),
        family_name: format!("Modell{i}"),
        date_of_birth: "2005-04-12".into(),
        ..Default::default()
    }
}

struct World {
    configs: BTreeMap<&'static str, NodeConfig>,
    clocks: BTreeMap<&'static str, Arc<ManualClock>>,
    sender: Option<Node>,
    link: Arc<Link>,
    /// The receiver's last inbox sequence number when it last went down.
    last_seq_when_down: u64,
    workers: Vec<LaneWorker>,
    consents: Vec<String>,
    /// Per person: the consent notice, then each accepted submission, in order.
    order: Vec<Vec<String>>,
    /// Per person withdrawn: how many envelopes the receiver held when it was answered.
    withdrawn: BTreeMap<usize, u64>,
    peer_up: bool,
}

impl World {
    async fn new(dir: &std::path::Path) -> Self {
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let specs = pki::segeberg([(addr(1), addr(2)), (addr(3), addr(4)), (addr(5), addr(6))]);
        pki::init(dir, &specs).unwrap();
        let mut configs = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        let now = kurzdraht_node::clock::now_ms();
        for a in [JC, JA] {
            configs.insert(a, NodeConfig::load(&dir.join(a).join("node.toml")).unwrap());
            clocks.insert(a, ManualClock::at(now));
        }
        let open = |a: &str| Node::open_with_clock(&configs[a], clocks[a].clone()).unwrap();
        let sender = Some(open(JC));
        let link = Arc::new(Link::default());
        *link.receiver.lock().unwrap() = Some(open(JA));
        let mut w = Self {
            workers: Vec::new(),
            configs,
            clocks,
            sender,
            link,
            last_seq_when_down: 0,
            consents: Vec::new(),
            order: vec![Vec::new(); PERSONS],
            withdrawn: BTreeMap::new(),
            peer_up: true,
        };
        w.workers = w.lane_workers();
        for i in 0..PERSONS {
            let mut req = pb::RecordConsentRequest {
                subject: Some(person(i)),
                given_by: pb::ConsentGiver::Person as i32,
                recipients: vec![JA.into()],
                purposes: vec![pb::Purpose::U25MoveOut as i32],
                evidence_reference: "Einwilligung/Modell".into(),
                recorded_by: "Herr Jensen".into(),
                categories: vec![
                    pb::DataCategory::Identity as i32,
                    pb::DataCategory::HousingSituation as i32,
                ],
                legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
                form: pb::ConsentForm::Written as i32,
                evidence_sha256: vec![7; 32],
                ..Default::default()
            };
            req.valid_until_ms = now + 30 * 24 * 3600 * 1000;
            let r = w
                .sender()
                .submission()
                .record_consent(IT, req)
                .await
                .unwrap();
            w.consents.push(r.consent.unwrap().consent_id);
            w.order[i].extend(r.notice_message_ids);
        }
        w
    }

    fn sender(&self) -> &Node {
        self.sender.as_ref().unwrap()
    }

    fn lane_workers(&self) -> Vec<LaneWorker> {
        let transport: Arc<dyn PeerTransport> = self.link.clone();
        (0..LANES)
            .map(|lane| LaneWorker::new(self.sender().clone(), JA, lane, transport.clone()))
            .collect()
    }

    fn open(&self, agency: &str) -> Node {
        Node::open_with_clock(&self.configs[agency], self.clocks[agency].clone()).unwrap()
    }

    fn receiver(&self) -> Node {
        self.link.receiver.lock().unwrap().clone().unwrap()
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Submit(i) => {
                let req = pb::SubmitRequest {
                    recipient: JA.into(),
                    consent_id: self.consents[i].clone(),
                    in_reply_to: String::new(),
                    body: Some(pb::MessageBody {
                        body: Some(Body::CertificationRequest(pb::CertificationRequest {
                            subject: Some(person(i)),
                            reason: format!("Antrag {}", self.order[i].len()),
                            respond_by: String::new(),
                            caseworker: "Herr Jensen".into(),
                        })),
                    }),
                    idempotency_key: String::new(),
                };
                match self.sender().submission().submit(IT, req).await {
                    Ok(r) => self.order[i].push(r.message_id),
                    Err(e) => assert!(
                        self.withdrawn.contains_key(&i),
                        "submission refused under a consent in force: {e}"
                    ),
                }
            }
            Op::Round(lane) => {
                self.workers[usize::from(lane)].step().await.unwrap();
            }
            Op::Peer { up } => {
                self.peer_up = up;
                let running = self.link.receiver.lock().unwrap().is_some();
                match (up, running) {
                    (true, false) => *self.link.receiver.lock().unwrap() = Some(self.open(JA)),
                    (false, true) => {
                        self.last_seq_when_down = self.inbox_seq_now();
                        *self.link.receiver.lock().unwrap() = None;
                    }
                    _ => {}
                }
            }
            Op::LoseReply => self.link.lose_reply.store(true, Ordering::SeqCst),
            Op::Duplicate(k) => {
                let sent = self.link.sent.lock().unwrap().clone();
                if sent.is_empty() || !self.peer_up {
                    return;
                }
                let env = sent[k % sent.len()].clone();
                let Some(receiver) = self.link.receiver.lock().unwrap().clone() else {
                    return;
                };
                let first = receiver.reception().receive(JC, env.clone()).await;
                let again = receiver.reception().receive(JC, env).await;
                if let (Ok(a), Ok(b)) = (first, again) {
                    assert_eq!(a, b, "a duplicate got another receipt");
                }
            }
            Op::Withdraw(i) => {
                if self.withdrawn.contains_key(&i) {
                    return;
                }
                self.sender()
                    .submission()
                    .withdraw_consent(
                        IT,
                        pb::WithdrawConsentRequest {
                            consent_id: self.consents[i].clone(),
                            recorded_by: "Herr Jensen".into(),
                            manner: "schriftlich".into(),
                            idempotency_key: String::new(),
                        },
                    )
                    .await
                    .unwrap();
                // Answered: from here on, nothing under it may reach the receiver.
                let held = self.inbox_seq_now();
                self.withdrawn.insert(i, held);
            }
            Op::Tick(ms) => {
                for c in self.clocks.values() {
                    c.advance(ms);
                }
            }
            Op::RestartSender => {
                self.workers.clear();
                self.sender = None; // the last handle: the store closes
                self.sender = Some(self.open(JC));
                self.workers = self.lane_workers();
            }
            Op::RestartReceiver => {
                let was = self.link.receiver.lock().unwrap().take();
                if was.is_some() {
                    drop(was);
                    *self.link.receiver.lock().unwrap() = Some(self.open(JA));
                }
            }
        }
    }

    /// The receiver's last inbox sequence number (0: nothing yet).
    fn inbox_seq_now(&self) -> u64 {
        let node = self.link.receiver.lock().unwrap().clone();
        node.map_or(self.last_seq_when_down, |n| {
            n.ledger()
                .inbox_after(0, usize::MAX)
                .unwrap()
                .last()
                .map_or(0, |r| r.seq)
        })
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let mut w = World::new(dir.path()).await;
    for op in ops {
        w.apply(op).await;
    }
    // The peer comes back; every lane is drained, time passing to each retry.
    w.apply(Op::Peer { up: true }).await;
    for _ in 0..200 {
        if w.sender().ledger().outbox_len(JA) == 0 {
            break;
        }
        for lane in 0..LANES {
            w.apply(Op::Round(lane)).await;
        }
        w.apply(Op::Tick(300_000)).await;
    }
    prop_assert_eq!(w.sender().ledger().outbox_len(JA), 0, "queue not drained");
    let receiver = w.receiver();
    let inbox = receiver.ledger().inbox_after(0, usize::MAX).unwrap();
    let seq_of: BTreeMap<&str, u64> = inbox
        .iter()
        .map(|r| (r.message_id.as_str(), r.seq))
        .collect();
    for (i, order) in w.order.iter().enumerate() {
        let mut arrived = Vec::new();
        for (n, id) in order.iter().enumerate() {
            let status = w.sender().submission().status(id).unwrap();
            let held = receiver.ledger().inbox_record(id).unwrap();
            match DeliveryState::try_from(status.state).unwrap() {
                DeliveryState::Delivered => {
                    let held = held.unwrap_or_else(|| panic!("{id} delivered but not held"));
                    prop_assert_eq!(status.receipt.as_ref(), held.receipt.as_ref(), "{}", id);
                    arrived.push(held.seq);
                }
                DeliveryState::Refused => {
                    prop_assert!(w.withdrawn.contains_key(&i), "{} refused in force", id);
                    prop_assert_eq!(status.detail.as_str(), "consent-withdrawn");
                    // Sent before the withdrawal, its reply lost: held, but from before.
                    if let Some(h) = held {
                        arrived.push(h.seq);
                    }
                }
                other => prop_assert!(false, "{} (#{} of person {}) ended {:?}", id, n, i, other),
            }
        }
        prop_assert!(
            arrived.windows(2).all(|p| p[0] < p[1]),
            "person {}'s messages arrived out of order: {:?}",
            i,
            arrived
        );
        if let Some(at_withdrawal) = w.withdrawn.get(&i) {
            for id in order.iter().skip(1) {
                if let Some(seq) = seq_of.get(id.as_str()) {
                    prop_assert!(
                        seq <= at_withdrawal,
                        "{} arrived after its consent's withdrawal was answered",
                        id
                    );
                }
            }
        }
    }
    let submitted: Vec<&String> = w.order.iter().flatten().collect();
    let stats = (submitted.len(), inbox.len(), w.withdrawn.len());
    eprintln!(
        "submitted incl. notices {}, inbox {}, withdrawn {}",
        stats.0, stats.1, stats.2
    );
    for r in &inbox {
        if r.kind == MessageKind::CertificationRequest as i32 {
            prop_assert!(
                submitted.contains(&&r.message_id),
                "{} was never submitted",
                r.message_id
            );
        }
    }
    prop_assert!(w.sender().ledger().verify_audit().is_ok());
    prop_assert!(receiver.ledger().verify_audit().is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn every_message_ends_delivered_once_or_stopped(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
