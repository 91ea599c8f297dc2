//! `restart`: a restarted Jobcenter node with a long history resuming delivery; `backup`: the
//! write pause of an online backup.

use crate::common::*;
use anyhow::{bail, Context};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_envelope::{ids, sign_receipt};
use kurzdraht_ledger::{DataKey, Finish, Ledger, LedgerError, Outgoing};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::server::{self, Listeners};
use kurzdraht_node::{clock, NodeError};
use kurzdraht_proto::v1::{self as pb, message_body::Body, MessageKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- bench restart

/// Opens a store with its data key, waiting (up to 10 s) for a handle dropped just before to
/// release its lock.
pub(crate) async fn open_when_unlocked(dir: &Path, key: &DataKey) -> anyhow::Result<Ledger> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open_encrypted(dir, key) {
            Err(LedgerError::Locked { .. }) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Bytes of the files under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub(crate) struct Filled {
    /// The consent notice, then the queued requests, in outbox (FIFO) order.
    queued_ids: Vec<String>,
    consent_id: String,
    history: Duration,
    queue: Duration,
    flush: Duration,
    envelope_bytes: usize,
}

/// Fills the Jobcenter's store: a consent naming the Jugendamt (its notice queued first),
/// `delivered` messages finished as DELIVERED, then `queued` real requests left QUEUED.
pub(crate) async fn fill(
    jc: &NodeConfig,
    delivered: usize,
    queued: usize,
) -> anyhow::Result<Filled> {
    std::fs::create_dir_all(&jc.data_dir)?;
    let ledger = Ledger::open_encrypted(&jc.data_dir, &jc.data_key)?;
    let now = clock::now_ms();
    let (consent_id, notice_id) = record_consent_with_notice(&ledger, jc, now)?;
    let mut queued_ids = vec![notice_id];
    let (template, history) = write_history(&ledger, jc, &consent_id, now, delivered)?;
    let queue = queue_requests(&ledger, jc, &consent_id, queued, &mut queued_ids)?;
    let started = Instant::now();
    ledger.flush().await?;
    let flush = started.elapsed();
    if ledger.outbox_len(JA) != queued + 1 {
        bail!(
            "the outbox holds {} messages for {JA}, expected {}",
            ledger.outbox_len(JA),
            queued + 1
        );
    }
    Ok(Filled {
        queued_ids,
        consent_id,
        history,
        queue,
        flush,
        envelope_bytes: envelope_bytes(&template),
    })
}

/// Records the benchmark's consent naming the Jugendamt, with its consent notice queued;
/// returns the consent's id and the notice's message id.
fn record_consent_with_notice(
    ledger: &Ledger,
    jc: &NodeConfig,
    now: i64,
) -> anyhow::Result<(String, String)> {
    let consent = pb::ConsentRecord {
        consent_id: ids::new_id(),
        subject: Some(subject()),
        given_by: pb::ConsentGiver::Person as i32,
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: now,
        valid_until_ms: now + 365 * clock::DAY_MS,
        categories: bench_categories(),
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![0x5e; 32],
        evidence_reference: BENCH_EVIDENCE.into(),
        recorded_by: "Herr Jensen".into(),
        recorded_at_ms: now,
        ..Default::default()
    };
    let consent_id = consent.consent_id.clone();
    let notice_body = pb::MessageBody {
        body: Some(Body::ConsentNotice(pb::ConsentNotice {
            consent: Some(consent.clone()),
        })),
    };
    let notice = seal_outgoing(
        &jc.signing_key,
        JC,
        MessageKind::ConsentNotice,
        JA,
        &consent_id,
        &notice_body,
        now,
        jc.delivery.deadline,
    );
    ledger.record_consent(&consent, std::slice::from_ref(&notice), now)?;
    Ok((consent_id, notice.message_id))
}

/// History: the same sealed request under fresh ids, each enqueued and at once finished as
/// DELIVERED with a (fake, but realistically sized) receipt; returns the request and the time
/// the history took.
fn write_history(
    ledger: &Ledger,
    jc: &NodeConfig,
    consent_id: &str,
    now: i64,
    delivered: usize,
) -> anyhow::Result<(Outgoing, Duration)> {
    let key = &jc.signing_key;
    let template = seal_outgoing(
        key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        consent_id,
        &certification_request(REASON.into()),
        now,
        jc.delivery.deadline,
    );
    let receipt = sign_receipt(
        &pb::Receipt {
            message_id: template.message_id.clone(),
            envelope_sha256: template.envelope_sha256.to_vec(),
            sender: JC.into(),
            receiver: JA.into(),
            received_at_ms: now,
        },
        key,
    );
    let delivered_as = Finish::Delivered { receipt };
    let started = Instant::now();
    for i in 1..=delivered {
        let mut out = template.clone();
        out.message_id = ids::new_id();
        let at = clock::now_ms();
        out.submitted_at_ms = at;
        ledger.enqueue(&out)?;
        ledger.finish(&out.message_id, &delivered_as, at)?;
        if i % 10_000 == 0 || i == delivered {
            let s = started.elapsed().as_secs_f64();
            eprintln!(
                "  history: {i} / {delivered} delivered messages written ({s:.1} s, {:.0}/s)",
                i as f64 / s.max(1e-9)
            );
        }
    }
    Ok((template, started.elapsed()))
}

/// The queue: real sealed requests, each its own envelope, citing the consent; appends their
/// ids to `queued_ids` and returns the time the queue took.
fn queue_requests(
    ledger: &Ledger,
    jc: &NodeConfig,
    consent_id: &str,
    queued: usize,
    queued_ids: &mut Vec<String>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..queued {
        let out = seal_outgoing(
            &jc.signing_key,
            JC,
            MessageKind::CertificationRequest,
            JA,
            consent_id,
            &certification_request(REASON.into()),
            clock::now_ms(),
            jc.delivery.deadline,
        );
        ledger.enqueue(&out)?;
        queued_ids.push(out.message_id);
    }
    let queue = started.elapsed();
    eprintln!(
        "  queue: {queued} sealed CertificationRequests queued ({:.2} s)",
        queue.as_secs_f64()
    );
    Ok(queue)
}

pub(crate) struct RunningNode {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    fn start(config: NodeConfig, listeners: Listeners) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        Ok(self.task.await.context("node task")??)
    }
}

/// Connects the IT system's client, retrying until `until`.
pub(crate) async fn client_until(
    config: &ClientConfig,
    until: Instant,
) -> anyhow::Result<AgencyClient> {
    loop {
        match connect(config).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= until => return Err(e.into()),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// What the restarted node did, in milliseconds after `run()` was called.
pub(crate) struct Resumed {
    api_answering: Duration,
    notice: i64,
    first_request: i64,
    half: i64,
    last: i64,
    /// (messages delivered so far, ms) at every checkpoint.
    timeline: Vec<(usize, i64)>,
}

pub(crate) async fn watch_delivery(
    client: &mut AgencyClient,
    node: &RunningNode,
    ids: &[String],
    t0: Instant,
    t0_ms: i64,
    until: Instant,
) -> anyhow::Result<Resumed> {
    let n = ids.len();
    let step = (n / 20).max(1);
    let mut checkpoints: Vec<usize> = vec![0, 1.min(n - 1), n / 2];
    checkpoints.extend((step..n).step_by(step));
    checkpoints.push(n - 1);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let mut api_answering = None;
    let mut at = std::collections::BTreeMap::new();
    for &i in &checkpoints {
        loop {
            if node.task.is_finished() {
                bail!("the Jobcenter node stopped while delivering");
            }
            if Instant::now() >= until {
                bail!(
                    "gave up: message {i} of {n} still not DELIVERED after {:.0} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            let status = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_status(pb::GetStatusRequest {
                    message_id: ids[i].clone(),
                }),
            )
            .await;
            let status = match status {
                Ok(Ok(s)) => s.into_inner(),
                Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Ok(Err(s)) => return Err(s.into()),
                Err(_) => continue, // not answering yet: the node may still be opening its store
            };
            api_answering.get_or_insert_with(|| t0.elapsed());
            match pb::DeliveryState::try_from(status.state) {
                Ok(pb::DeliveryState::Delivered) => {
                    let when = status.updated_at_ms - t0_ms;
                    at.insert(i, when);
                    eprintln!(
                        "  {} / {n} delivered, {:.2} s after run()",
                        i + 1,
                        when as f64 / 1000.0
                    );
                    break;
                }
                Ok(pb::DeliveryState::Queued) => tokio::time::sleep(POLL).await,
                other => bail!(
                    "message {i} of {n} ended {other:?}, not DELIVERED: {}",
                    status.detail
                ),
            }
        }
    }
    let get = |i: usize| at.get(&i).copied().unwrap_or_default();
    Ok(Resumed {
        api_answering: api_answering.unwrap_or_default(),
        notice: get(0),
        first_request: get(1.min(n - 1)),
        half: get(n / 2),
        last: get(n - 1),
        timeline: at.iter().map(|(i, t)| (i + 1, *t)).collect(),
    })
}

/// The final state of every watched message, counted by state name (16 calls in flight).
pub(crate) async fn final_states(
    client: &AgencyClient,
    ids: &[String],
) -> anyhow::Result<std::collections::BTreeMap<&'static str, usize>> {
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(16).max(1)) {
        let (mut client, chunk) = (client.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut names = Vec::with_capacity(chunk.len());
            for message_id in chunk {
                let s = client
                    .get_status(pb::GetStatusRequest { message_id })
                    .await?
                    .into_inner();
                names.push(
                    pb::DeliveryState::try_from(s.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("UNKNOWN"),
                );
            }
            anyhow::Ok(names)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        for name in t.await.context("status task")?? {
            *counts.entry(name).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Mean round trip of `n` sequential GetStatus calls (for reading the polling figures).
pub(crate) async fn status_round_trip(
    client: &mut AgencyClient,
    message_id: &str,
    n: u32,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..n {
        client
            .get_status(pb::GetStatusRequest {
                message_id: message_id.to_string(),
            })
            .await?;
    }
    Ok(start.elapsed() / n)
}

pub(crate) async fn inbox_len(client: &mut AgencyClient) -> anyhow::Result<usize> {
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

pub(crate) async fn backup(
    delivered: usize,
    rounds: usize,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if rounds == 0 {
        bail!("--rounds must be above 0");
    }
    let fed = TempFederation::create(dir, "backup")?;
    let jc = NodeConfig::load(&fed.files_of(JC)?.node_config)?;
    println!("kurzdraht-bench backup — the write pause of an online backup");
    print_machine(fed.path());
    println!(
        "parameters: {delivered} delivered messages of history (envelopes kept), {rounds} backups"
    );
    eprintln!(
        "filling the Jobcenter's store in {} …",
        jc.data_dir.display()
    );
    let filled = fill(&jc, delivered, 1).await?;
    let ledger = open_when_unlocked(&jc.data_dir, &jc.data_key).await?;
    ledger.flush().await?;
    println!(
        "store:      {:.1} MiB on disk, envelope {} bytes",
        dir_bytes(&jc.data_dir) as f64 / (1024.0 * 1024.0),
        filled.envelope_bytes
    );
    println!("round  entries  archive MiB  pause ms  backup ms  longest submission beside it ms");
    for round in 1..=rounds {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (ledger, stop, key, consent_id) = (
                ledger.clone(),
                stop.clone(),
                jc.signing_key.clone(),
                filled.consent_id.clone(),
            );
            let deadline = jc.delivery.deadline;
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let out = seal_outgoing(
                        &key,
                        JC,
                        MessageKind::CertificationRequest,
                        JA,
                        &consent_id,
                        &certification_request(REASON.into()),
                        clock::now_ms(),
                        deadline,
                    );
                    let t = Instant::now();
                    ledger.enqueue(&out)?;
                    ledger.flush().await?;
                    longest = longest.max(t.elapsed());
                    n += 1;
                }
                anyhow::Ok((longest, n))
            })
        };
        // let the writer run before the backup begins
        tokio::time::sleep(Duration::from_millis(200)).await;
        let archive = fed.path().join(format!("backup-{round}.kzb"));
        let started = Instant::now();
        let exported = {
            let ledger = ledger.clone();
            let archive = archive.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let file = kurzdraht_node::service::backup::create_private(&archive)?;
                let manifest = kurzdraht_ledger::BackupManifest {
                    agency: JC.into(),
                    taken_at_ms: clock::now_ms(),
                    schema: 0,
                };
                Ok(ledger.export(manifest, std::io::BufWriter::new(file))?)
            })
            .await??
        };
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::SeqCst);
        let (longest, writes) = writer.await??;
        println!(
            "{round:>5}  {:>7}  {:>11.1}  {:>8}  {:>9}  {:>8} ({writes} submissions)",
            exported.entries,
            exported.bytes as f64 / (1024.0 * 1024.0),
            exported.pause.as_millis(),
            took.as_millis(),
            longest.as_millis()
        );
        std::fs::remove_file(&archive)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn restart(
    delivered: usize,
    queued: usize,
    timeout: Duration,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if queued == 0 || timeout.is_zero() {
        bail!("--queued and --timeout must be above 0");
    }
    let fed = TempFederation::create(dir, "restart")?;
    let files_of = |id: &str| fed.files_of(id);
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)?;
    let jc_client = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client = ClientConfig::load(&files_of(JA)?.client_config)?;

    println!("kurzdraht-bench restart — a restarted Jobcenter node resumes delivery");
    print_machine(fed.path());
    println!(
        "parameters: {delivered} delivered messages of history, {queued} queued CertificationRequests (+1 consent notice queued first), timeout {} s",
        timeout.as_secs()
    );
    println!("setup:      real PKI (pki init), both nodes in this process on loopback (gRPC, mutual TLS), status polled via the Jobcenter's AgencyApi every {} ms", POLL.as_millis());

    eprintln!(
        "filling the Jobcenter's store in {} …",
        jc.data_dir.display()
    );
    let filled = fill(&jc, delivered, queued).await?;
    let store = inspect_filled(&jc, &filled).await?;

    eprintln!("starting the Jugendamt node …");
    let ja_node = RunningNode::start(ja.clone(), Listeners::bind(&ja).await?);
    let outcome = restart_jobcenter(&jc, &jc_client, &ja_client, &filled, timeout).await;
    let ja_stopped = ja_node.stop().await;
    let resumption = outcome?;
    ja_stopped.context("stopping the Jugendamt node")?;

    print_store(delivered, queued, &filled, &store);
    let all_delivered = print_resumption(queued, &resumption);
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    if !all_delivered {
        println!("NOT every queued message was delivered exactly once");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The filled store, looked at offline before the restart.
struct FilledStore {
    open_time: Duration,
    sled_size: u64,
    head_time: Duration,
    files_size: u64,
}

/// Opens the filled store alone (timed), checks that its queue starts with the consent
/// notice, and measures its size.
async fn inspect_filled(jc: &NodeConfig, filled: &Filled) -> anyhow::Result<FilledStore> {
    let t = Instant::now();
    let ledger = open_when_unlocked(&jc.data_dir, &jc.data_key).await?;
    let open_time = t.elapsed();
    let sled_size = ledger.size_on_disk()?;
    let t = Instant::now();
    let head = ledger.outbox_head(JA)?;
    let head_time = t.elapsed();
    let consent_held = ledger.consent(&filled.consent_id)?.is_some();
    drop(ledger);
    if head.map(|h| h.message_id).as_ref() != filled.queued_ids.first() || !consent_held {
        bail!("the filled store does not start its queue with the consent notice");
    }
    let files_size = dir_bytes(&jc.data_dir);
    Ok(FilledStore {
        open_time,
        sled_size,
        head_time,
        files_size,
    })
}

/// What the restarted Jobcenter did: when it resumed, each queued message's final state, the
/// Jugendamt's inbox, and a status round trip.
struct Resumption {
    resumed: Resumed,
    states: std::collections::BTreeMap<&'static str, usize>,
    received: usize,
    rtt: Duration,
}

/// With the Jugendamt running: restarts the Jobcenter node on its filled store and watches it
/// deliver its queue (up to `timeout`), then stops it.
async fn restart_jobcenter(
    jc: &NodeConfig,
    jc_client: &ClientConfig,
    ja_client: &ClientConfig,
    filled: &Filled,
    timeout: Duration,
) -> anyhow::Result<Resumption> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut ja_api = client_until(ja_client, until).await?;
    ja_api
        .list_consents(pb::ListConsentsRequest::default())
        .await?;
    eprintln!("restarting the Jobcenter node on its filled store …");
    let listeners = Listeners::bind(jc).await?;
    let (t0, t0_ms) = (Instant::now(), clock::now_ms());
    let jc_node = RunningNode::start(jc.clone(), listeners);
    let until = t0 + timeout;
    let watched = tokio::time::timeout_at(tokio::time::Instant::from_std(until), async {
        let mut jc_api = client_until(jc_client, until).await?;
        let resumed =
            watch_delivery(&mut jc_api, &jc_node, &filled.queued_ids, t0, t0_ms, until).await?;
        eprintln!("checking every queued message's final state …");
        let states = final_states(&jc_api, &filled.queued_ids).await?;
        let received = inbox_len(&mut ja_api).await?;
        let rtt = status_round_trip(&mut jc_api, &filled.queued_ids[0], 20).await?;
        anyhow::Ok(Resumption {
            resumed,
            states,
            received,
            rtt,
        })
    })
    .await;
    let stopped = jc_node.stop().await;
    let watched = watched
        .map_err(|_| anyhow::anyhow!("gave up after {} s (--timeout)", timeout.as_secs()))??;
    stopped.context("stopping the Jobcenter node")?;
    anyhow::Ok(watched)
}

/// The report's first part: how the Jobcenter's store was filled and what it holds.
fn print_store(delivered: usize, queued: usize, filled: &Filled, store: &FilledStore) {
    println!();
    println!("store of the Jobcenter before the restart");
    println!(
        "  {:<52} {:>12}",
        "history written (enqueue + finish DELIVERED)",
        format!("{:.2} s", filled.history.as_secs_f64())
    );
    if delivered > 0 {
        println!(
            "  {:<52} {:>12}",
            "  rate",
            format!(
                "{:.0} msg/s",
                delivered as f64 / filled.history.as_secs_f64().max(1e-9)
            )
        );
    }
    println!(
        "  {:<52} {:>12}",
        format!("{queued} requests sealed and queued"),
        format!("{:.2} s", filled.queue.as_secs_f64())
    );
    println!(
        "  {:<52} {:>12}",
        "one Ledger::flush of all that",
        fmt_duration(filled.flush)
    );
    println!(
        "  {:<52} {:>12}",
        "envelope of a request",
        format!("{} B", filled.envelope_bytes)
    );
    println!(
        "  {:<52} {:>12}",
        "size on disk (sled size_on_disk)",
        fmt_bytes(store.sled_size)
    );
    println!(
        "  {:<52} {:>12}",
        "size on disk (files in data_dir)",
        fmt_bytes(store.files_size)
    );
    println!(
        "  {:<52} {:>12}",
        "Ledger::open_encrypted of the filled store alone",
        fmt_duration(store.open_time)
    );
    println!(
        "  {:<52} {:>12}",
        "then outbox_head (oldest queued message)",
        fmt_duration(store.head_time)
    );
}

/// The report's second part: how the restarted Jobcenter resumed; returns whether every
/// queued message was delivered exactly once.
fn print_resumption(queued: usize, resumption: &Resumption) -> bool {
    let Resumption {
        resumed,
        states,
        received,
        rtt,
    } = resumption;
    let received = *received;
    let secs = |ms: i64| format!("{:.3} s", ms as f64 / 1000.0);
    let rate = |n: usize, ms: i64| n as f64 / (ms as f64 / 1000.0).max(1e-3);
    println!();
    println!("restart: times after server::run() was called for the Jobcenter (Jugendamt running)");
    println!(
        "  {:<52} {:>12}",
        "AgencyApi answers (first GetStatus)",
        fmt_duration(resumed.api_answering)
    );
    println!(
        "  {:<52} {:>12}",
        "consent notice (1st queued) DELIVERED",
        secs(resumed.notice)
    );
    println!(
        "  {:<52} {:>12}",
        "first CertificationRequest DELIVERED",
        secs(resumed.first_request)
    );
    println!(
        "  {:<52} {:>12}",
        format!("message {} of {} DELIVERED", queued / 2 + 1, queued + 1),
        secs(resumed.half)
    );
    println!(
        "  {:<52} {:>12}",
        format!("all {} queued DELIVERED", queued + 1),
        secs(resumed.last)
    );
    println!(
        "  {:<52} {:>12}",
        format!("delivery rate ({queued} requests after the notice)"),
        format!("{:.0} msg/s", rate(queued, resumed.last - resumed.notice))
    );
    let timeline: Vec<String> = resumed
        .timeline
        .iter()
        .map(|(n, t)| format!("{n}@{:.2}s", *t as f64 / 1000.0))
        .collect();
    println!("  timeline (delivered@time): {}", timeline.join(" "));
    let all_delivered = states.len() == 1
        && states.get("DELIVERED") == Some(&(queued + 1))
        && received == queued + 1;
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("  final states at the Jobcenter: {}", states.join(", "));
    println!("  Jugendamt inbox holds {received} messages");
    println!(
        "  (times from each message's updated_at_ms, set by the node when it recorded DELIVERED)"
    );
    println!(
        "  AgencyApi GetStatus round trip, 20 sequential calls to the idle node: mean {}",
        fmt_duration(*rtt)
    );
    all_delivered
}
