//! `kurzdraht-bench footprint`: a node's memory at scale, measured against the target "a
//! node's RSS under 100 MB at 1 million consent records and 1 million stored messages".
//!
//! This module and its two siblings own the whole measurement (`footprint_fill.rs`: the
//! test data and the fill; `footprint_report.rs`: the tables and the verdict; here: the run):
//! - **the fill**: the Jugendamt Kreis Segeberg's store of a real federation (`pki init`),
//!   opened exactly as its node opens it (`Node::open`: the node's data key, so consents and
//!   inbox are sealed at rest, and the node's store options), written through
//!   `Ledger::accept_deliveries` as reception stores a delivered batch: first N consents, each
//!   arriving as the Jobcenter's signed ConsentNotice (an inbox record, and the replicated
//!   consent keeping that notice as proof), then M CertificationRequests citing them, each a
//!   sealed envelope with the Jugendamt's batch receipt — 256 envelopes per transaction (a
//!   full DeliverBatch), with their audit entries, and one flush at the end;
//! - **the run**: the Jobcenter (empty store, the peer) and the Jugendamt as `kurzdraht serve`
//!   processes. Once the Jugendamt answers it stays idle for `--idle-seconds` and until it is
//!   quiet (its start-up work shows there), then IT-system clients drive a light mix: GetConsentEvidence by stored consent
//!   and by stored message, the tail of the inbox, Acknowledge, and Submit of
//!   MoveOutCertifications to the Jobcenter (under a consent recorded live) with GetStatus;
//! - **the readings**: VmRSS and VmHWM of the serve process (/proc/<pid>/status) at its first
//!   answer, after idling and after the load (VmHWM reset before the load where the kernel
//!   allows), RSS sampled over time, CPU time, and the Jobcenter's figures as an empty-store
//!   baseline;
//! - **the tables and the verdict** against the target.
//!
//! Helpers shared with the other benchmarks (machine, formatting, sealing, `ServeProcess`,
//! /proc readings) live in `common.rs`.

use crate::common::{self as bench, JA, JC};
use crate::footprint_fill::*;
use crate::footprint_report::*;
use anyhow::{bail, Context};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_envelope::ids;
use kurzdraht_node::clock;
use kurzdraht_node::config::NodeConfig;
use kurzdraht_proto::v1::{self as pb, get_consent_evidence_request::About};
use kurzdraht_testkit::ServeProcess;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The target of the issue: a node's resident memory, in bytes (100 MB).
pub(crate) const TARGET_BYTES: u64 = 100_000_000;
/// Envelopes per stored batch: the most a delivery worker sends in one DeliverBatch.
pub(crate) const FILL_BATCH: usize = 256;
/// Batches the sealing thread may run ahead of the writer.
pub(crate) const FILL_QUEUE: usize = 8;
/// How many stored ids of each kind the load picks from, spread evenly over the store.
pub(crate) const SAMPLE: usize = 4096;
/// How often the serve process's RSS is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The fill spreads the records' times over this past period.
pub(crate) const HISTORY_MS: i64 = 365 * clock::DAY_MS;
/// A batch arrives this long after its newest envelope was sealed.
pub(crate) const TRANSIT_MS: i64 = 40;
/// How long the run waits for a node to answer and to become quiet after its start, and for
/// the live consent to arrive.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(600);
/// A node counts as quiet below this share of one core over [`QUIET_WINDOW`].
pub(crate) const QUIET_CPU: f64 = 0.1;
pub(crate) const QUIET_WINDOW: Duration = Duration::from_millis(500);

/// What `kurzdraht-bench footprint` was asked for.
pub(crate) struct Params {
    pub consents: usize,
    pub messages: usize,
    pub load: Duration,
    pub idle: Duration,
    pub callers: usize,
    /// `[storage] cache_mb` for the Jugendamt's node.toml; `None` keeps the default.
    pub cache_mb: Option<u64>,
    pub dir: Option<PathBuf>,
}

pub(crate) async fn run(p: Params) -> anyhow::Result<ExitCode> {
    if p.consents == 0 || p.load.is_zero() || p.callers == 0 {
        bail!("--consents, --seconds and --callers must be above 0");
    }
    let fed = bench::TempFederation::create(p.dir.clone(), "footprint")?;
    let files_of = |id: &str| fed.files_of(id);
    if let Some(mb) = p.cache_mb {
        fed.configure(JA, "[storage]", &format!("cache_mb = {mb}"))?;
    }
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)
        .context("loading the Jugendamt's node.toml")?;
    let jc_client = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client = ClientConfig::load(&files_of(JA)?.client_config)?;

    println!(
        "kurzdraht-bench footprint — a node's memory with a large store, against RSS < 100 MB"
    );
    bench::print_machine(fed.path());
    println!(
        "parameters: {} consents, {} messages, {} s idle, then {} s of load by {} caller(s)",
        thousands(p.consents),
        thousands(p.messages),
        p.idle.as_secs(),
        p.load.as_secs(),
        p.callers
    );
    println!(
        "page cache: {}",
        p.cache_mb.map_or_else(
            || "the node.toml default ([storage] cache_mb not set)".into(),
            |mb| format!("[storage] cache_mb = {mb} in the Jugendamt's node.toml (--cache-mb)")
        )
    );
    println!("store:      the Jugendamt's, opened as its node opens it (Node::open: data key, store options), filled");
    println!("            through Ledger::accept_deliveries as reception stores a DeliverBatch ({FILL_BATCH} envelopes, one");
    println!("            batch receipt signature, their audit entries, one transaction); one flush at the end");
    println!("            consents: each the Jobcenter's signed ConsentNotice (inbox) + the replicated consent with it");
    println!("            messages: sealed CertificationRequests citing those consents, with the Jugendamt's receipts");
    println!("node:       `kurzdraht serve` of this binary on that store, default node.toml of `pki init`;");
    println!(
        "            the Jobcenter (empty store) as its peer, also a `kurzdraht serve` process"
    );

    eprintln!(
        "filling the Jugendamt's store in {} …",
        ja.data_dir.display()
    );
    let filled = fill(&ja, &jc, p.consents, p.messages).await?;

    eprintln!("starting the Jobcenter and the Jugendamt nodes …");
    let mut jc_proc = ServeProcess::spawn(
        JC,
        &files_of(JC)?.node_config,
        fed.path().join("jobcenter.log"),
    )?;
    let spawned = Instant::now();
    let mut ja_proc = ServeProcess::spawn(
        JA,
        &files_of(JA)?.node_config,
        fed.path().join("jugendamt.log"),
    )?;
    let outcome = measure(
        &p,
        &filled,
        &jc_client,
        &ja_client,
        &mut jc_proc,
        &mut ja_proc,
        spawned,
    )
    .await;
    let stopped_ja = ja_proc.stop().await;
    let stopped_jc = jc_proc.stop().await;
    let measured = outcome?;
    report(&filled, &measured);
    println!("load avg:   {} (1/5/15 min, at end)", bench::load_average());
    stopped_ja.context("stopping the Jugendamt node")?;
    stopped_jc.context("stopping the Jobcenter node")?;
    if measured.undelivered > 0 {
        println!(
            "NOT every submitted message was DELIVERED: {} of {} still not",
            measured.undelivered, measured.submitted
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- the run

/// VmRSS and VmHWM of a process at one moment.
#[derive(Clone, Copy, Default)]
pub(crate) struct Reading {
    pub(crate) rss: Option<u64>,
    pub(crate) hwm: Option<u64>,
    pub(crate) cpu_secs: Option<f64>,
}

impl Reading {
    pub(crate) fn of(pid: &str, ticks: f64) -> Self {
        Self {
            rss: bench::proc_status_bytes(pid, "VmRSS"),
            hwm: bench::peak_rss(pid),
            cpu_secs: bench::cpu_ticks(pid).map(|t| t as f64 / ticks),
        }
    }
}

/// Samples a process's VmRSS every [`SAMPLE_EVERY`] until stopped.
pub(crate) struct Sampler {
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<Vec<(Duration, u64)>>,
}

impl Sampler {
    pub(crate) fn start(pid: String, t0: Instant) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Some(rss) = bench::proc_status_bytes(&pid, "VmRSS") {
                    samples.push((t0.elapsed(), rss));
                }
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = &mut stopped => return samples,
                }
            }
        });
        Self { stop, task }
    }

    pub(crate) async fn finish(self) -> Vec<(Duration, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The load's calls, by kind.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Op {
    EvidenceByConsent,
    EvidenceByMessage,
    GetStatus,
    InboxTail,
    Acknowledge,
    Submit,
}

impl Op {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Op::EvidenceByConsent => "GetConsentEvidence (stored consent)",
            Op::EvidenceByMessage => "GetConsentEvidence (stored message)",
            Op::GetStatus => "GetStatus (own submitted message)",
            Op::InboxTail => "ReadInbox (last 10 items)",
            Op::Acknowledge => "Acknowledge (stored message)",
            Op::Submit => "Submit MoveOutCertification → Jobcenter",
        }
    }
}

/// One caller's round: mostly reads of stored records, some writes, one submission.
pub(crate) const MIX: [Op; 10] = [
    Op::EvidenceByConsent,
    Op::EvidenceByMessage,
    Op::GetStatus,
    Op::EvidenceByConsent,
    Op::InboxTail,
    Op::EvidenceByMessage,
    Op::Acknowledge,
    Op::EvidenceByConsent,
    Op::Submit,
    Op::GetStatus,
];

/// What one run measured.
pub(crate) struct Measured {
    pub(crate) answering_after: Duration,
    pub(crate) at_answer: Reading,
    /// How long the node was left idle: at least `--idle-seconds`, and until it was quiet.
    pub(crate) idle_for: Duration,
    pub(crate) after_idle: Reading,
    /// Whether VmHWM could be reset before the load (else it is the peak since start).
    pub(crate) reset: bool,
    pub(crate) after_load: Reading,
    pub(crate) peer: Reading,
    pub(crate) load_elapsed: Duration,
    /// Latencies by call kind, sorted.
    pub(crate) calls: BTreeMap<Op, Vec<Duration>>,
    pub(crate) submitted: usize,
    pub(crate) undelivered: usize,
    pub(crate) samples: Vec<(Duration, u64)>,
    /// When the idle phase and the load began, after the Jugendamt was started.
    pub(crate) load_from: Duration,
    pub(crate) load_to: Duration,
}

/// Connects once the node answers a call (GetStatus of an unknown id: NOT_FOUND), which it
/// does only after it opened its store.
pub(crate) async fn answering(
    config: &ClientConfig,
    node: &mut ServeProcess,
    until: Instant,
) -> anyhow::Result<AgencyClient> {
    let probe = pb::GetStatusRequest {
        message_id: ids::new_id(),
    };
    loop {
        node.check_running()?;
        if Instant::now() >= until {
            bail!(
                "the node did not answer within {} s",
                START_TIMEOUT.as_secs()
            );
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = connect(config).await?;
            match client.get_status(probe.clone()).await {
                Ok(_) => Ok(client),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(client),
                Err(s) => Err(anyhow::Error::from(s)),
            }
        })
        .await;
        match attempt {
            Ok(Ok(client)) => return Ok(client),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub(crate) async fn measure(
    p: &Params,
    filled: &Filled,
    jc_client: &ClientConfig,
    ja_client: &ClientConfig,
    jc_proc: &mut ServeProcess,
    ja_proc: &mut ServeProcess,
    spawned: Instant,
) -> anyhow::Result<Measured> {
    let ticks = bench::clock_ticks();
    let pid = ja_proc.pid();
    let sampler = Sampler::start(pid.clone(), spawned);
    let until = spawned + START_TIMEOUT;
    let ja_api = answering(ja_client, ja_proc, until).await?;
    let answering_after = spawned.elapsed();
    let at_answer = Reading::of(&pid, ticks);
    eprintln!(
        "  the Jugendamt answers after {:.2} s (RSS {}); idle for {} s …",
        answering_after.as_secs_f64(),
        opt_bytes(at_answer.rss),
        p.idle.as_secs()
    );
    let mut jc_api = answering(jc_client, jc_proc, until).await?;
    tokio::time::sleep(p.idle.saturating_sub(spawned.elapsed() - answering_after)).await;
    quiet(ja_proc, ticks, until).await?;
    let idle_for = spawned.elapsed() - answering_after;
    let after_idle = Reading::of(&pid, ticks);
    eprintln!(
        "  quiet after {:.1} s idle (RSS {}, CPU {})",
        idle_for.as_secs_f64(),
        opt_bytes(after_idle.rss),
        opt_secs(after_idle.cpu_secs)
    );

    let (person, consent_id) = record_live_consent(&mut jc_api, filled).await?;
    let reset = bench::reset_peak_rss(&pid);
    let load_from = spawned.elapsed();
    eprintln!(
        "  load: {} caller(s) for {} s …",
        p.callers,
        p.load.as_secs()
    );
    let mut ja_probe = ja_api.clone();
    consent_arrived(&mut ja_probe, &consent_id, Instant::now() + START_TIMEOUT).await?;
    let submit = pb::SubmitRequest {
        recipient: JC.into(),
        consent_id,
        in_reply_to: String::new(),
        body: Some(move_out_certification(person, today())),
        idempotency_key: String::new(),
    };
    let (load_elapsed, calls, submitted_ids) = load(
        &ja_api,
        &filled.produced,
        filled.records() as u64,
        &submit,
        p.callers,
        p.load,
    )
    .await?;
    let load_to = spawned.elapsed();
    ja_proc.check_running()?;
    let after_load = Reading::of(&pid, ticks);
    let peer = Reading::of(&jc_proc.pid(), ticks);
    let undelivered = undelivered(&ja_api, &submitted_ids).await?;
    let samples = sampler.finish().await;
    Ok(Measured {
        answering_after,
        at_answer,
        idle_for,
        after_idle,
        reset,
        after_load,
        peer,
        load_elapsed,
        calls,
        submitted: submitted_ids.len(),
        undelivered,
        samples,
        load_from,
        load_to,
    })
}

/// A consent recorded live at the Jobcenter, so that the Jugendamt's submissions pass the
/// Jobcenter's own consent check too; it reaches the Jugendamt as a ConsentNotice.
/// Returns the person and the consent's id.
async fn record_live_consent(
    jc_api: &mut AgencyClient,
    filled: &Filled,
) -> anyhow::Result<(pb::Subject, String)> {
    let person = subject(filled.consents, this_year());
    let consent_id = jc_api
        .record_consent(pb::RecordConsentRequest {
            subject: Some(person.clone()),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![pb::Purpose::U25MoveOut as i32],
            categories: categories(),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Written as i32,
            evidence_sha256: vec![0x5e; 32],
            evidence_reference: "JC-SE/Einwilligung/live".into(),
            recorded_by: "Herr Jensen".into(),
            ..Default::default()
        })
        .await
        .context("RecordConsent at the Jobcenter")?
        .into_inner()
        .consent
        .map(|c| c.consent_id)
        .context("RecordConsent returned no consent")?;
    Ok((person, consent_id))
}

/// Waits until the node uses less than [`QUIET_CPU`] of a core over [`QUIET_WINDOW`]: its
/// start-up work (e.g. the first retention sweep) is done.
pub(crate) async fn quiet(
    node: &mut ServeProcess,
    ticks: f64,
    until: Instant,
) -> anyhow::Result<()> {
    let pid = node.pid();
    let mut before = bench::cpu_ticks(&pid);
    loop {
        tokio::time::sleep(QUIET_WINDOW).await;
        node.check_running()?;
        let now = bench::cpu_ticks(&pid);
        let busy = match (before, now) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / ticks,
            _ => return Ok(()), // no /proc here: nothing to wait for
        };
        if busy < QUIET_CPU * QUIET_WINDOW.as_secs_f64() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "the node was still busy {} s after its start",
                START_TIMEOUT.as_secs()
            );
        }
        before = now;
    }
}

/// Waits until the Jugendamt holds consent `id` (its notice arrived).
pub(crate) async fn consent_arrived(
    client: &mut AgencyClient,
    id: &str,
    until: Instant,
) -> anyhow::Result<()> {
    let req = pb::GetConsentEvidenceRequest {
        about: Some(About::ConsentId(id.to_string())),
    };
    loop {
        match client.get_consent_evidence(req.clone()).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => {
                return Err(anyhow::Error::from(s).context("the live consent at the Jugendamt"))
            }
        }
    }
}

type LoadResult = (Duration, BTreeMap<Op, Vec<Duration>>, Vec<String>);

/// `callers` IT-system clients, each looping through [`MIX`] until `duration` is over.
pub(crate) async fn load(
    client: &AgencyClient,
    produced: &Produced,
    inbox_len: u64,
    submit: &pb::SubmitRequest,
    callers: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let consents = Arc::new(produced.consent_sample.clone());
    let messages = Arc::new(produced.message_sample.clone());
    let submitted = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let it_system = Caller {
            client: client.clone(),
            consents: consents.clone(),
            messages: messages.clone(),
            submitted: submitted.clone(),
            submit: submit.clone(),
        };
        tasks.push(tokio::spawn(it_system.run(caller, deadline, inbox_len)));
    }
    let mut calls: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(done)) => {
                for (op, d) in done {
                    calls.entry(op).or_default().push(d);
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("caller task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = failure {
        return Err(e.context("the load on the Jugendamt"));
    }
    for l in calls.values_mut() {
        l.sort_unstable();
    }
    let ids = submitted
        .lock()
        .map_err(|_| anyhow::anyhow!("a caller panicked"))?
        .clone();
    Ok((elapsed, calls, ids))
}

/// One IT-system client of the load, with what it draws its calls from.
struct Caller {
    client: AgencyClient,
    consents: Arc<Vec<String>>,
    messages: Arc<Vec<String>>,
    submitted: Arc<Mutex<Vec<String>>>,
    submit: pb::SubmitRequest,
}

impl Caller {
    /// Loops through [`MIX`] (starting at step `caller`) until `deadline`; returns each call's
    /// operation and latency.
    async fn run(
        self,
        caller: usize,
        deadline: Instant,
        inbox_len: u64,
    ) -> anyhow::Result<Vec<(Op, Duration)>> {
        let Caller {
            mut client,
            consents,
            messages,
            submitted,
            submit,
        } = self;
        let mut rng = Rng(0xf00d + caller as u64);
        let mut calls: Vec<(Op, Duration)> = Vec::new();
        let mut step = caller;
        while Instant::now() < deadline {
            let op = MIX[step % MIX.len()];
            step += 1;
            let t = Instant::now();
            match op {
                Op::EvidenceByConsent | Op::EvidenceByMessage => {
                    let about = if op == Op::EvidenceByConsent {
                        About::ConsentId(consents[rng.below(consents.len())].clone())
                    } else if messages.is_empty() {
                        continue;
                    } else {
                        About::MessageId(messages[rng.below(messages.len())].clone())
                    };
                    let evidence = client
                        .get_consent_evidence(pb::GetConsentEvidenceRequest { about: Some(about) })
                        .await?
                        .into_inner();
                    if !evidence.signature_verified || evidence.consent.is_none() {
                        bail!("consent evidence without a verified notice");
                    }
                }
                Op::GetStatus => {
                    let id = {
                        let ids = submitted
                            .lock()
                            .map_err(|_| anyhow::anyhow!("a caller panicked"))?;
                        if ids.is_empty() {
                            continue;
                        }
                        ids[rng.below(ids.len())].clone()
                    };
                    client
                        .get_status(pb::GetStatusRequest { message_id: id })
                        .await?;
                }
                Op::InboxTail => {
                    let mut stream = client
                        .read_inbox(pb::ReadInboxRequest {
                            after_seq: inbox_len.saturating_sub(10),
                            follow: false,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    while stream.message().await?.is_some() {}
                }
                Op::Acknowledge => {
                    if messages.is_empty() {
                        continue;
                    }
                    client
                        .acknowledge(pb::AcknowledgeRequest {
                            message_id: messages[rng.below(messages.len())].clone(),
                        })
                        .await?;
                }
                Op::Submit => {
                    let id = client.submit(submit.clone()).await?.into_inner().message_id;
                    submitted
                        .lock()
                        .map_err(|_| anyhow::anyhow!("a caller panicked"))?
                        .push(id);
                }
            }
            calls.push((op, t.elapsed()));
        }
        anyhow::Ok(calls)
    }
}

/// How many of the submitted messages are not DELIVERED within 30 s.
pub(crate) async fn undelivered(client: &AgencyClient, ids: &[String]) -> anyhow::Result<usize> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut client = client.clone();
    let mut left = 0;
    for id in ids {
        loop {
            let status = client
                .get_status(pb::GetStatusRequest {
                    message_id: id.clone(),
                })
                .await?
                .into_inner();
            if status.state == pb::DeliveryState::Delivered as i32 {
                break;
            }
            if status.state != pb::DeliveryState::Queued as i32 || Instant::now() >= until {
                left += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(left)
}
