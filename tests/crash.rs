//! Store-and-forward under real process crashes.
//!
//! Every node here is a separate OS process of the real binary, `kurzdraht serve --config
//! <node.toml>`, started from a federation made by `pki::init` on free loopback ports. The
//! test process plays the agencies' IT systems through the AgencyApi and kills nodes with
//! SIGKILL (no chance to flush or say goodbye) or stops them with SIGTERM.
//!
//! What is proved:
//! 1. a receiver killed while a stream of messages arrives loses none and stores none twice;
//! 2. a sender killed while it accepts and delivers messages delivers, after its restart,
//!    every message whose submission it acknowledged, exactly once;
//! 3. messages wait in the outbox while the receiver is down and arrive in submission order;
//! 4. a second node process on the same data directory is refused and harms nothing;
//! 5. SIGTERM stops a node cleanly (exit 0) and it starts again with its data;
//! 6. a sender killed while Submit calls with idempotency keys are in flight, each call
//!    repeated with its key after the restart, delivers every request exactly once.
//!
//! Each node's stdout/stderr go to `<federation>/<agency>/node.log`; a failing test prints
//! the tail of every node's log (`KURZDRAHT_TEST_KEEP=1` keeps the whole directory). Each
//! node is a `kurzdraht_testkit::ServeProcess`, killed when dropped, also on panic.

use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_envelope::{envelope_hash, verify_receipt, ExpectedReceipt, VerifyingKey};
use kurzdraht_node::directory::Directory;
use kurzdraht_node::pki;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::task::JoinHandle;

const U25: pb::Purpose = pb::Purpose::U25MoveOut;

/// How long a node may take to answer its API after being started.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a batch of messages may take to be delivered: a bound against hangs, well above
/// the typical time (test 1 delivers its 300 in about 20 s with debug builds on 2 cores).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(40);

// ---- the binary ----

// ---- the federation on disk ----

/// The PKI and configurations of the three Segeberg agencies in a temporary directory,
/// with fast delivery retries. No process runs until [`Federation::start`].
struct Federation {
    root: PathBuf,
    /// Removed when dropped, unless `KURZDRAHT_TEST_KEEP` is set.
    _dir: Option<TempDir>,
}

/// Replaces the value of every line `key = ...` (outside arrays) in a TOML text.
fn set_key(text: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                found = true;
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "no `{key} =` line in:\n{text}");
    out.join("\n") + "\n"
}

/// Rewrites the `[delivery]` section to retry fast: 50 ms doubling up to 500 ms.
fn fast_retries(text: &str) -> String {
    const FAST: [(&str, &str); 3] = [
        ("retry_initial_ms", "50"),
        ("retry_max_ms", "500"),
        ("request_timeout_ms", "5000"),
    ];
    let is_fast_key = |line: &str| {
        FAST.iter().any(|(k, _)| {
            line.trim_start()
                .strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let mut out = String::new();
    let mut found = false;
    for line in text.lines().filter(|l| !is_fast_key(l)) {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[delivery]" {
            found = true;
            for (k, v) in FAST {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
    }
    if !found {
        out.push_str("\n[delivery]\n");
        for (k, v) in FAST {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}

impl Federation {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("federation");
        let a = kurzdraht_testkit::free_addrs(6);
        let addrs = [(a[0], a[1]), (a[2], a[3]), (a[4], a[5])];
        let files = pki::init(&root, &pki::segeberg(addrs)).expect("pki init");
        for f in &files {
            let text = std::fs::read_to_string(&f.node_config).expect("read node.toml");
            pki::replace_file(&f.node_config, &fast_retries(&text)).expect("write node.toml");
        }
        if std::env::var_os("KURZDRAHT_TEST_KEEP").is_some() {
            // For diagnosis: keep the PKI, stores and node logs.
            let kept = dir.keep();
            eprintln!("KURZDRAHT_TEST_KEEP: federation kept in {}", kept.display());
            return Self { root, _dir: None };
        }
        Self {
            root,
            _dir: Some(dir),
        }
    }

    fn node_config(&self, agency: &str) -> PathBuf {
        self.root.join(agency).join("node.toml")
    }

    fn client_config(&self, agency: &str) -> ClientConfig {
        ClientConfig::load(&self.root.join(agency).join("client.toml"))
            .unwrap_or_else(|e| panic!("client.toml of {agency}: {e}"))
    }

    /// `agency`'s pinned signing keys, from the federation's directory.
    fn pinned_keys(&self, agency: &str) -> Vec<VerifyingKey> {
        Directory::from_toml(
            &std::fs::read_to_string(self.root.join("directory.toml")).expect("directory.toml"),
        )
        .expect("directory.toml")
        .get(agency)
        .unwrap_or_else(|| panic!("{agency} is not in the directory"))
        .active_keys()
        .to_vec()
    }

    /// Starts `agency`'s node as a process (logging at info to `<agency>/node.log`,
    /// appended to at each start) and waits until its API answers.
    async fn start(&self, agency: &str) -> (ServeProcess, AgencyClient) {
        let mut node = ServeProcess::builder(
            agency,
            &self.node_config(agency),
            self.root.join(agency).join("node.log"),
        )
        .log_level("info")
        .append_log()
        .spawn()
        .expect("start the node");
        let client = ready(&mut node, &self.client_config(agency)).await;
        (node, client)
    }
}

// ---- node processes ----

/// Waits until the node's AgencyApi answers; returns a client of it.
async fn ready(node: &mut ServeProcess, config: &ClientConfig) -> AgencyClient {
    node.wait_ready(START_TIMEOUT, || async {
        let mut client = connect(config).await.map_err(|e| e.to_string())?;
        client
            .list_consents(pb::ListConsentsRequest::default())
            .await
            .map_err(|s| format!("{s:?}"))?;
        Ok(client)
    })
    .await
    .expect("the node's API answers")
}

/// Starts the node again on its data directory (it was killed or stopped) and waits until
/// its API answers.
async fn restart(node: &mut ServeProcess, config: &ClientConfig) -> AgencyClient {
    node.restart().expect("restart the node");
    ready(node, config).await
}

/// kill -9, and wait until the process is gone (it died of SIGKILL, not of a clean stop).
fn sigkill(node: &mut ServeProcess) {
    use std::os::unix::process::ExitStatusExt as _;
    let status = node.kill().expect("SIGKILL");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
}

/// How often the node's log says it answered a redelivery with the stored receipt.
fn duplicates_answered(node: &ServeProcess) -> usize {
    node.log_text()
        .matches("duplicate answered with the original receipt")
        .count()
}

// ---- the IT systems ----

fn lena() -> pb::Subject {
    subject("Lena", "Hansen", "2005-04-12")
}

/// Records a consent of Lena at the Jobcenter for the Kreis office and waits until its
/// consent notice is DELIVERED (receipt recorded at the Jobcenter), not merely held by the
/// Kreis office: a node killed between storing the notice and answering would otherwise
/// leave the notice at the head of the queue, ahead of everything a test submits.
async fn replicated_consent(jc: &mut AgencyClient, ja: &AgencyClient) -> String {
    let recorded = record_consent(jc, consent_request(&lena(), &[JA], &[U25])).await;
    let id = recorded.consent.expect("the recorded consent").consent_id;
    wait_all_delivered(jc, &recorded.notice_message_ids).await;
    wait_for_consent_state(ja, &id, pb::ConsentState::ConsentInForce).await;
    id
}

/// The body of request number `i`.
fn request(i: usize) -> pb::message_body::Body {
    certification_request(&lena(), &format!("Anfrage Nr. {i:03}"))
}

/// Acknowledged submissions: (request number, message id).
type Acked = Arc<Mutex<Vec<(usize, String)>>>;

/// Submits requests `0..n` to the Kreis office from `tasks` concurrent tasks (task `t`
/// takes `t, t + tasks, …`, pausing `pace` after each). Each acknowledged submission is
/// recorded in `acked` at once; a task stops at its first failure and returns it.
fn submit_concurrently(
    jc: &AgencyClient,
    consent: &str,
    n: usize,
    tasks: usize,
    pace: Duration,
    acked: &Acked,
) -> Vec<JoinHandle<Option<tonic::Status>>> {
    (0..tasks)
        .map(|t| {
            let mut client = jc.clone();
            let consent = consent.to_string();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(tasks) {
                    match submit(&mut client, JA, &consent, "", request(i)).await {
                        Ok(r) => {
                            assert_eq!(
                                state_name(r.state),
                                "QUEUED",
                                "request {i} was accepted as QUEUED"
                            );
                            acked.lock().unwrap().push((i, r.message_id));
                        }
                        Err(s) => return Some(s),
                    }
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                None
            })
        })
        .collect()
}

/// Polls (with a cursor) until the inbox holds at least `n` items from the Jobcenter that
/// are certification requests; returns how many it saw.
async fn wait_for_requests_in_inbox(ja: &AgencyClient, n: usize) -> usize {
    let mut client = ja.clone();
    let mut cursor = 0;
    let mut count = 0;
    let started = Instant::now();
    loop {
        for item in read_inbox(&mut client, cursor).await {
            cursor = item.seq;
            if item.kind == pb::MessageKind::CertificationRequest as i32 {
                count += 1;
            }
        }
        if count >= n {
            return count;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "only {count} of {n} requests reached the inbox within {DELIVERY_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every message in `ids` is DELIVERED at the sender; returns their statuses.
/// Panics at once if one ends in another final state.
///
/// Delivery is FIFO per lane (the messages of one consent share one), so the ids are looked
/// at in the given order and a round stops at the first one still QUEUED: one status call
/// per poll while nothing moves, instead of one per message (which would load the nodes
/// more than the deliveries do). Ids in other lanes are simply found delivered later.
async fn wait_all_delivered(
    sender: &AgencyClient,
    ids: &[String],
) -> BTreeMap<String, pb::MessageStatus> {
    let mut client = sender.clone();
    let mut done = BTreeMap::new();
    let mut pending: VecDeque<&String> = ids.iter().collect();
    let started = Instant::now();
    while let Some(id) = pending.front() {
        let s = status(&mut client, id).await;
        match pb::DeliveryState::try_from(s.state) {
            Ok(pb::DeliveryState::Delivered) => {
                done.insert(id.to_string(), s);
                pending.pop_front();
            }
            Ok(pb::DeliveryState::Queued) => {
                assert!(
                    started.elapsed() < DELIVERY_TIMEOUT,
                    "{} of {} messages not delivered within {DELIVERY_TIMEOUT:?}; \
                     {id}: QUEUED, {} attempts, {:?}",
                    pending.len(),
                    ids.len(),
                    s.attempts,
                    s.detail
                );
                tokio::time::sleep(POLL).await;
            }
            _ => panic!(
                "{id} ended {} instead of DELIVERED: {:?}",
                state_name(s.state),
                s.detail
            ),
        }
    }
    done
}

/// Asserts that each of `ids` is in `inbox` exactly once and that no message is there
/// twice; returns the inbox items by message id.
fn exactly_once<'a>(
    inbox: &'a [pb::InboxItem],
    ids: &[String],
) -> HashMap<&'a str, &'a pb::InboxItem> {
    let mut by_id: HashMap<&str, &pb::InboxItem> = HashMap::new();
    for item in inbox {
        if let Some(first) = by_id.insert(&item.message_id, item) {
            panic!(
                "{} is in the inbox twice (seq {} and {})",
                item.message_id, first.seq, item.seq
            );
        }
    }
    for id in ids {
        assert!(by_id.contains_key(id.as_str()), "{id} is not in the inbox");
    }
    by_id
}

/// Verifies each sender-held receipt against the receiver's pinned keys and the hash of
/// the envelope exactly as the receiver holds it.
fn verify_receipts(
    fed: &Federation,
    statuses: &BTreeMap<String, pb::MessageStatus>,
    inbox: &HashMap<&str, &pb::InboxItem>,
) {
    let keys = fed.pinned_keys(JA);
    for (id, s) in statuses {
        let item = inbox[id.as_str()];
        let envelope = item
            .envelope
            .as_ref()
            .expect("the item carries its envelope");
        let receipt = s
            .receipt
            .as_ref()
            .expect("a delivered message has a receipt");
        let verified = verify_receipt(
            receipt,
            &keys,
            &ExpectedReceipt {
                message_id: id,
                envelope_sha256: &envelope_hash(envelope),
                sender: JC,
                receiver: JA,
            },
        )
        .unwrap_or_else(|e| panic!("the receipt of {id} does not verify: {e}"));
        assert_eq!(verified.message_id, *id);
    }
}

/// The items of `inbox` that are certification requests (not consent notices).
fn requests(inbox: &[pb::InboxItem]) -> Vec<&pb::InboxItem> {
    inbox
        .iter()
        .filter(|i| i.kind == pb::MessageKind::CertificationRequest as i32)
        .collect()
}

// ---- the tests ----

/// The tests of this file run one after another: each runs two or three node processes
/// (debug builds) that sign, verify and fsync per message, and on a 2-core machine
/// parallel runs would make their timing depend on each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 1. The Kreis office's node is killed (SIGKILL) while 300 requests stream in from 8
/// concurrent submitters; after its restart every request is delivered, stored exactly
/// once, and carries a receipt that verifies against what the receiver stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream() {
    let _serial = SERIAL.lock().await;
    const N: usize = 300;
    let started = Instant::now();
    let fed = Federation::new();
    let (_jc_node, mut jc) = fed.start(JC).await;
    let (mut ja_node, ja) = fed.start(JA).await;
    let consent = replicated_consent(&mut jc, &ja).await;

    let acked: Acked = Arc::default();
    let tasks = submit_concurrently(&jc, &consent, N, 8, Duration::ZERO, &acked);
    let seen = wait_for_requests_in_inbox(&ja, 50).await;
    sigkill(&mut ja_node);
    let killed_at = acked.lock().unwrap().len();
    for t in tasks {
        if let Some(s) = t.await.expect("submitter task") {
            panic!("the sender refused a submission while the receiver was down: {s:?}");
        }
    }
    let ids: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids.len(), N);

    // The receiver is dead: whatever had not arrived waits in the outbox.
    let mut queued = 0;
    for id in &ids {
        if status(&mut jc, id).await.state == pb::DeliveryState::Queued as i32 {
            queued += 1;
        }
    }
    assert!(
        queued > 0,
        "the kill came too late: every message was already delivered"
    );

    let ja = restart(&mut ja_node, &fed.client_config(JA)).await;
    let statuses = wait_all_delivered(&jc, &ids).await;
    let inbox = read_inbox(&mut ja.clone(), 0).await;
    let by_id = exactly_once(&inbox, &ids);
    assert_eq!(
        requests(&inbox).len(),
        N,
        "nothing but the {N} requests (and the consent notice)"
    );
    verify_receipts(&fed, &statuses, &by_id);
    eprintln!(
        "receiver_killed_mid_stream: killed with {seen} requests in the inbox and {killed_at} \
         acknowledged; {queued} still queued; all {N} delivered exactly once ({} redeliveries \
         answered with the stored receipt) in {:?}",
        duplicates_answered(&ja_node),
        started.elapsed()
    );
}

/// 2. The Jobcenter's node is killed (SIGKILL) while 8 submitters feed it 300 requests and
/// it delivers them; after its restart every submission it had acknowledged is delivered
/// exactly once. Submissions that failed because it died are not counted; if one of them
/// was stored nonetheless, it too arrives at most once. The receiver, whose Deliver call was
/// cut off by the sender's death, must go on committing (an acknowledgement there answers
/// within 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_mid_stream() {
    let _serial = SERIAL.lock().await;
    const N: usize = 300;
    let started = Instant::now();
    let fed = Federation::new();
    let (mut jc_node, mut jc) = fed.start(JC).await;
    let (ja_node, ja) = fed.start(JA).await;
    let consent = replicated_consent(&mut jc, &ja).await;

    let acked: Acked = Arc::default();
    // Paced (8 tasks, 100 ms apart: about 80 submissions a second) so that the kill falls
    // while submissions are still coming in and deliveries are under way.
    let tasks = submit_concurrently(&jc, &consent, N, 8, Duration::from_millis(100), &acked);
    let seen = wait_for_requests_in_inbox(&ja, 10).await;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "100 submissions took too long");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sigkill(&mut jc_node);
    let mut failed = 0;
    for t in tasks {
        if t.await.expect("submitter task").is_some() {
            failed += 1;
        }
    }
    drop(jc);
    let acked: Vec<(usize, String)> = acked.lock().unwrap().clone();
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    assert!(
        ids.len() < N,
        "the kill came too late: all {N} submissions were acknowledged"
    );
    assert!(failed > 0, "no submission failed although the sender died");

    // The sender died in the middle of a Deliver call, so the receiver's handler for it may
    // have been dropped while it waited for its flush. The receiver's store must still
    // commit: an acknowledgement answers only after a flush.
    let first = requests(&read_inbox(&mut ja.clone(), 0).await)[0]
        .message_id
        .clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        ja.clone().acknowledge(pb::AcknowledgeRequest {
            message_id: first.clone(),
        }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "acknowledging {first} at the Kreis office hangs: its store no longer commits \
             (a flush waits for ever) after the Jobcenter died mid-delivery"
        )
    })
    .expect("acknowledge at the Kreis office");

    let jc = restart(&mut jc_node, &fed.client_config(JC)).await;
    let statuses = wait_all_delivered(&jc, &ids).await;
    // Submissions stored but not acknowledged before the kill may arrive too (once);
    // wait until those the receiver holds are DELIVERED at the sender as well.
    let inbox = read_inbox(&mut ja.clone(), 0).await;
    let acked_ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let extra: Vec<String> = requests(&inbox)
        .iter()
        .map(|i| i.message_id.clone())
        .filter(|id| !acked_ids.contains(id.as_str()))
        .collect();
    wait_all_delivered(&jc, &extra).await;
    let inbox = read_inbox(&mut ja.clone(), 0).await;
    let by_id = exactly_once(&inbox, &ids);
    verify_receipts(&fed, &statuses, &by_id);
    // Each acknowledged request carries the body that was submitted under its id.
    for (i, id) in &acked {
        let Some(pb::MessageBody {
            body: Some(pb::message_body::Body::CertificationRequest(r)),
        }) = &by_id[id.as_str()].body
        else {
            panic!("{id} is not a certification request");
        };
        assert_eq!(r.reason, format!("Anfrage Nr. {i:03}"), "{id}");
    }
    eprintln!(
        "sender_killed_mid_stream: killed with {seen} requests in the inbox, {} acknowledged, \
         {failed} submitters cut off; {} acknowledged + {} unacknowledged-but-stored delivered \
         exactly once ({} redeliveries answered with the stored receipt) in {:?}",
        ids.len(),
        ids.len(),
        extra.len(),
        duplicates_answered(&ja_node),
        started.elapsed()
    );
}

/// 3. The Kreis office's node is down while 100 requests are submitted: they wait QUEUED
/// while the Jobcenter retries with growing attempt counts; once the Kreis office is back
/// all 100 arrive exactly once and in submission order (all under one consent: one FIFO lane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_a_while() {
    let _serial = SERIAL.lock().await;
    const N: usize = 100;
    let started = Instant::now();
    let fed = Federation::new();
    let (_jc_node, mut jc) = fed.start(JC).await;
    let (mut ja_node, ja) = fed.start(JA).await;
    let consent = replicated_consent(&mut jc, &ja).await;
    drop(ja);
    sigkill(&mut ja_node);
    let down_since = Instant::now();

    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(submit_ok(&mut jc, JA, &consent, request(i)).await);
    }
    // The head of the queue is retried, more and more often; nothing leaves QUEUED.
    let first = status(&mut jc, &ids[0]).await.attempts;
    let grown = wait_until("the head's attempts grow by 2", || {
        let mut c = jc.clone();
        let id = ids[0].clone();
        async move {
            let s = status(&mut c, &id).await;
            if s.state != pb::DeliveryState::Queued as i32 {
                panic!("{id} left QUEUED while the receiver was down: {s:?}");
            }
            if s.attempts >= first + 2 {
                Ok(s.attempts)
            } else {
                Err(format!("{} attempts", s.attempts))
            }
        }
    })
    .await;
    assert!(grown >= 2);
    let head = status(&mut jc, &ids[0]).await;
    assert!(
        !head.detail.is_empty(),
        "the last transient error is reported"
    );
    if let Some(rest) = Duration::from_secs(2).checked_sub(down_since.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    for id in &ids {
        let s = status(&mut jc, id).await;
        assert_eq!(
            state_name(s.state),
            "QUEUED",
            "{id} while the receiver is down"
        );
    }
    let attempts_before = status(&mut jc, &ids[0]).await.attempts;
    let down_for = down_since.elapsed();

    let ja = restart(&mut ja_node, &fed.client_config(JA)).await;
    let statuses = wait_all_delivered(&jc, &ids).await;
    let inbox = read_inbox(&mut ja.clone(), 0).await;
    let by_id = exactly_once(&inbox, &ids);
    let arrived: Vec<String> = requests(&inbox)
        .iter()
        .map(|i| i.message_id.clone())
        .collect();
    assert_eq!(arrived, ids, "the {N} requests arrive in submission order");
    assert!(inbox.windows(2).all(|w| w[0].seq < w[1].seq));
    verify_receipts(&fed, &statuses, &by_id);
    eprintln!(
        "receiver_down_for_a_while: {N} queued for {:?}, head tried {attempts_before} times; \
         all delivered in order in {:?}",
        down_for,
        started.elapsed()
    );
}

/// 4. A second `kurzdraht serve` on the same data directory (other ports, so only the
/// store lock can stop it) exits non-zero at once, saying the directory is in use; the
/// first node keeps serving, and its store stays intact (its audit chain verifies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_on_same_data_dir_is_refused() {
    let _serial = SERIAL.lock().await;
    let fed = Federation::new();
    let (mut jc_node, mut jc) = fed.start(JC).await;
    let consent = consent_id(&mut jc, consent_request(&lena(), &[JA], &[U25])).await;

    let data_dir = fed.root.join(JC).join("data");
    assert!(
        data_dir.is_dir(),
        "the first node made {}",
        data_dir.display()
    );
    let ports = kurzdraht_testkit::free_addrs(2);
    let mut text = std::fs::read_to_string(fed.node_config(JC)).expect("node.toml");
    text = set_key(&text, "data_dir", &format!("'{}'", data_dir.display()));
    text = set_key(&text, "peer", &format!("\"{}\"", ports[0]));
    text = set_key(&text, "api", &format!("\"{}\"", ports[1]));
    let second_config = fed.root.join(JC).join("node-second.toml");
    pki::write_file(&second_config, &text, false).expect("write the second node.toml");

    let second_log = fed.root.join(JC).join("second.log");
    let mut second = ServeProcess::builder("second process", &second_config, second_log)
        .log_level("info")
        .append_log()
        .spawn()
        .expect("start the second process");
    let t = Instant::now();
    let exit = second
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the second process ends by itself");
    let took = t.elapsed();
    let stderr = second.log_text();
    assert!(!exit.success(), "the second process must fail: {exit}");
    assert!(
        stderr.contains("is in use by another process"),
        "stderr names the reason: {stderr}"
    );
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "stderr names the data directory: {stderr}"
    );

    // The first node still serves, reads and writes its store.
    assert!(
        jc_node.exited().expect("try_wait").is_none(),
        "the first node still runs"
    );
    let held = list_consents(&mut jc).await;
    assert!(
        held.iter()
            .any(|e| e.consent.as_ref().is_some_and(|c| c.consent_id == consent)),
        "the consent is still held"
    );
    let queued = submit_ok(&mut jc, JA, &consent, request(0)).await;
    assert_eq!(state_name(status(&mut jc, &queued).await.state), "QUEUED");

    // `audit verify` does not touch a store a node holds: refused as in use (exit 9).
    let held_verify = Command::new(binary())
        .args(["audit", "verify", "--config"])
        .arg(fed.node_config(JC))
        .output()
        .expect("run audit verify");
    assert_eq!(
        held_verify.status.code(),
        Some(9),
        "audit verify on a running node's store: {}",
        String::from_utf8_lossy(&held_verify.stderr)
    );
    assert!(
        String::from_utf8_lossy(&held_verify.stderr).contains("in use by another process"),
        "{}",
        String::from_utf8_lossy(&held_verify.stderr)
    );

    // After a clean stop, the store opens offline and its audit chain verifies.
    drop(jc);
    let stopped = jc_node
        .stop_status(Duration::from_secs(10))
        .await
        .expect("SIGTERM stops the first node");
    assert!(stopped.success(), "the first node stops cleanly: {stopped}");
    let verify = Command::new(binary())
        .args(["audit", "verify", "--config"])
        .arg(fed.node_config(JC))
        .output()
        .expect("run audit verify");
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    eprintln!(
        "second_process_on_same_data_dir_is_refused: refused with {exit} after {took:?}; {}",
        String::from_utf8_lossy(&verify.stdout).trim()
    );
}

/// 5. SIGTERM stops a node cleanly — exit code 0 within a few seconds, also with a queued
/// message for an unreachable peer and an IT system following the inbox — and the node
/// starts again with its data: the queued message is then delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful() {
    let _serial = SERIAL.lock().await;
    const WITHIN: Duration = Duration::from_secs(5);
    let fed = Federation::new();
    let (mut jc_node, mut jc) = fed.start(JC).await;
    // The Kreis office is not running: the consent notice and the request wait.
    let recorded = record_consent(&mut jc, consent_request(&lena(), &[JA], &[U25])).await;
    let consent = recorded.consent.expect("the recorded consent").consent_id;
    let notice = recorded
        .notice_message_ids
        .first()
        .expect("a consent notice for the Kreis office")
        .clone();
    let queued = submit_ok(&mut jc, JA, &consent, request(0)).await;
    wait_until("the Jobcenter has tried to deliver the notice", || {
        let mut c = jc.clone();
        let id = notice.clone();
        async move {
            let s = status(&mut c, &id).await;
            (s.state == pb::DeliveryState::Queued as i32 && s.attempts >= 1)
                .then_some(())
                .ok_or_else(|| format!("{s:?}"))
        }
    })
    .await;

    let t = Instant::now();
    let exit = jc_node
        .stop_status(WITHIN)
        .await
        .expect("SIGTERM stops the node");
    let jc_took = t.elapsed();
    assert!(exit.success(), "SIGTERM: exit 0, not {exit}");
    assert!(
        jc_node.log_text().contains("stopped"),
        "the node logs its clean stop"
    );

    // Restart: the consent and the queued message are still there.
    let mut jc = restart(&mut jc_node, &fed.client_config(JC)).await;
    let held = list_consents(&mut jc).await;
    assert!(
        held.iter()
            .any(|e| e.consent.as_ref().is_some_and(|c| c.consent_id == consent)),
        "the consent survived the restart"
    );
    assert_eq!(state_name(status(&mut jc, &queued).await.state), "QUEUED");

    // The Kreis office comes up; the message is delivered.
    let (mut ja_node, mut ja) = fed.start(JA).await;
    let statuses = wait_all_delivered(&jc, std::slice::from_ref(&queued)).await;
    let inbox = wait_for_inbox_len(&ja, 2).await;
    let by_id = exactly_once(&inbox, std::slice::from_ref(&queued));
    verify_receipts(&fed, &statuses, &by_id);

    // SIGTERM while an IT system follows the Kreis office's inbox.
    let mut stream = ja
        .read_inbox(pb::ReadInboxRequest {
            after_seq: 0,
            follow: true,
            unacknowledged_only: false,
        })
        .await
        .expect("follow the inbox")
        .into_inner();
    for _ in 0..2 {
        stream.message().await.expect("stream ok").expect("an item");
    }
    let t = Instant::now();
    let exit = ja_node
        .stop_status(WITHIN)
        .await
        .expect("SIGTERM stops the node");
    let ja_took = t.elapsed();
    assert!(
        exit.success(),
        "SIGTERM with a following reader: exit 0, not {exit}"
    );
    drop(stream);
    let mut ja = restart(&mut ja_node, &fed.client_config(JA)).await;
    assert_eq!(ids(&read_inbox(&mut ja, 0).await), ids(&inbox));
    eprintln!(
        "sigterm_is_graceful: the Jobcenter stopped in {jc_took:?}, the Kreis office (with a \
         following reader) in {ja_took:?}; both restarted with their data"
    );
}

/// Submits request number `i` with its own idempotency key, `crash-<i>`.
async fn submit_keyed(
    client: &mut AgencyClient,
    consent: &str,
    i: usize,
) -> Result<pb::SubmitResponse, tonic::Status> {
    client
        .submit(pb::SubmitRequest {
            recipient: JA.into(),
            consent_id: consent.into(),
            in_reply_to: String::new(),
            body: Some(pb::MessageBody {
                body: Some(request(i)),
            }),
            idempotency_key: format!("crash-{i:03}"),
        })
        .await
        .map(|r| r.into_inner())
}

/// What one round of test 6 saw.
struct KeyedRound {
    answered: usize,
    in_flight: usize,
    /// Calls whose caller saw an error although the node had stored them.
    stored_unanswered: usize,
}

/// One round of test 6: calls `base..base + n` from 16 concurrent submitters, each with its
/// key; SIGKILL of the Jobcenter's node while they run; restart; every call repeated with
/// its key. Returns the message id of each call, in call order.
async fn keyed_round(
    fed: &Federation,
    jc_node: &mut ServeProcess,
    jc: AgencyClient,
    consent: &str,
    base: usize,
    n: usize,
) -> (AgencyClient, Vec<String>, KeyedRound) {
    const TASKS: usize = 16;
    let started = Instant::now();
    let acked: Acked = Arc::default();
    let tasks: Vec<JoinHandle<Option<usize>>> = (0..TASKS)
        .map(|t| {
            let (mut client, consent, acked) = (jc.clone(), consent.to_string(), acked.clone());
            tokio::spawn(async move {
                for i in (base + t..base + n).step_by(TASKS) {
                    match submit_keyed(&mut client, &consent, i).await {
                        Ok(r) => acked.lock().unwrap().push((i, r.message_id)),
                        // This call's answer is lost: its caller does not know what happened.
                        Err(_) => return Some(i),
                    }
                }
                None
            })
        })
        .collect();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while acked.lock().unwrap().len() < n / 4 {
        assert!(
            Instant::now() < deadline,
            "{} submissions took too long",
            n / 4
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Not right after an answer (then the calls in flight have hardly begun): somewhere in
    // the next few milliseconds, while calls are being stored and answered.
    std::thread::sleep(Duration::from_micros(
        u64::from(started.elapsed().subsec_nanos()) % 8_000,
    ));
    sigkill(jc_node);
    let mut in_flight = Vec::new();
    for t in tasks {
        if let Some(i) = t.await.expect("submitter task") {
            in_flight.push(i);
        }
    }
    drop(jc);
    let acked: BTreeMap<usize, String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() < n,
        "the kill came too late: every call was answered"
    );
    assert!(!in_flight.is_empty(), "no call was in flight at the kill");

    // Every call again, with its key.
    let mut jc = restart(jc_node, &fed.client_config(JC)).await;
    let restarted_at = kurzdraht_node::clock::now_ms();
    let mut ids = Vec::with_capacity(n);
    let mut stored_unanswered = 0;
    for i in base..base + n {
        let r = submit_keyed(&mut jc, consent, i)
            .await
            .unwrap_or_else(|s| panic!("repeat of call {i}: {s:?}"));
        assert_eq!(state_name(r.state), "QUEUED", "call {i}");
        if let Some(first) = acked.get(&i) {
            assert_eq!(
                &r.message_id, first,
                "call {i} got another answer than its first"
            );
        } else if in_flight.contains(&i)
            && status(&mut jc, &r.message_id).await.submitted_at_ms < restarted_at
        {
            stored_unanswered += 1;
        }
        ids.push(r.message_id);
    }
    let round = KeyedRound {
        answered: acked.len(),
        in_flight: in_flight.len(),
        stored_unanswered,
    };
    (jc, ids, round)
}

/// 6. The case: the Jobcenter's node is killed (SIGKILL) while 16 submitters call
/// Submit, each call with its own idempotency key. Callers whose call was in flight see an
/// error, though some of those submissions were stored (and would be delivered). After the
/// restart every call is repeated with its key, answered or not: each answered call gets
/// its first answer again (same message id), and each request reaches the Kreis office
/// exactly once — none lost, none twice. Rounds of kill and restart go on until a kill fell
/// between storing a call and answering it (at most 8; about 3 in 4 rounds see one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_with_keyed_submits_in_flight() {
    let _serial = SERIAL.lock().await;
    const PER_ROUND: usize = 80;
    const MAX_ROUNDS: usize = 8;
    let started = Instant::now();
    let fed = Federation::new();
    let (mut jc_node, mut jc) = fed.start(JC).await;
    let (_ja_node, ja) = fed.start(JA).await;
    let consent = replicated_consent(&mut jc, &ja).await;

    let mut ids = Vec::new();
    let mut rounds = Vec::new();
    while rounds.len() < MAX_ROUNDS && rounds.iter().all(|r: &KeyedRound| r.stored_unanswered == 0)
    {
        let base = rounds.len() * PER_ROUND;
        let (client, round_ids, round) =
            keyed_round(&fed, &mut jc_node, jc, &consent, base, PER_ROUND).await;
        jc = client;
        ids.extend(round_ids);
        rounds.push(round);
    }
    let n = ids.len();
    let statuses = wait_all_delivered(&jc, &ids).await;
    let inbox = read_inbox(&mut ja.clone(), 0).await;
    let by_id = exactly_once(&inbox, &ids);
    assert_eq!(
        requests(&inbox).len(),
        n,
        "exactly the {n} requests, none twice"
    );
    for (i, id) in ids.iter().enumerate() {
        let Some(pb::MessageBody {
            body: Some(pb::message_body::Body::CertificationRequest(r)),
        }) = &by_id[id.as_str()].body
        else {
            panic!("{id} is not a certification request");
        };
        assert_eq!(r.reason, format!("Anfrage Nr. {i:03}"), "{id}");
    }
    verify_receipts(&fed, &statuses, &by_id);
    let stored_unanswered: usize = rounds.iter().map(|r| r.stored_unanswered).sum();
    assert!(
        stored_unanswered > 0,
        "in {} rounds no kill fell between storing a call and answering it: nothing was tested",
        rounds.len()
    );
    let seen: Vec<String> = rounds
        .iter()
        .map(|r| format!("{}/{}/{}", r.answered, r.in_flight, r.stored_unanswered))
        .collect();
    eprintln!(
        "sender_killed_with_keyed_submits_in_flight: {} round(s) of {PER_ROUND} calls, each \
         killed mid-stream (answered/in flight/in flight but stored: {}); all {n} calls \
         repeated with their keys and delivered exactly once in {:?}",
        rounds.len(),
        seen.join(", "),
        started.elapsed()
    );
}
