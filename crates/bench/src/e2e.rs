//! `e2e`: two real `kurzdraht serve` processes, a bare call (baseline) versus the full path.

use crate::{common::*, restart::*};
use anyhow::{bail, Context};
use kurzdraht_client::{AgencyClient, ClientConfig};
use kurzdraht_envelope::ids;
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::{clock, pki};
use kurzdraht_proto::v1::{self as pb, MessageKind};
use kurzdraht_testkit::ServeProcess;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod baseline;
mod report;

use baseline::{measure_baseline, start_bare_peer};

// ---------------------------------------------------------------- bench e2e

/// What the delivery worker logs (at info) when an attempt failed and will be retried.
pub(crate) const RETRY_LOG: &str = "delivery failed; will retry";

/// Warm-up calls (baseline) or messages (kurzdraht) before each measured run.
pub(crate) const WARM_UP: usize = 20;

/// A process whose CPU time and peak RSS a run reports.
pub(crate) struct Watched {
    label: &'static str,
    pid: String,
}

pub(crate) struct Usage {
    label: &'static str,
    cpu_secs: Option<f64>,
    peak_rss: Option<u64>,
}

pub(crate) struct UsageMeter {
    before: Vec<Option<u64>>,
}

impl UsageMeter {
    fn start(procs: &[Watched], resettable: &mut bool) -> Self {
        for p in procs {
            *resettable &= reset_peak_rss(&p.pid);
        }
        Self {
            before: procs.iter().map(|p| cpu_ticks(&p.pid)).collect(),
        }
    }

    fn stop(self, procs: &[Watched], ticks: f64) -> Vec<Usage> {
        procs
            .iter()
            .zip(self.before)
            .map(|(p, before)| Usage {
                label: p.label,
                cpu_secs: before
                    .zip(cpu_ticks(&p.pid))
                    .map(|(b, a)| a.saturating_sub(b) as f64 / ticks),
                peak_rss: peak_rss(&p.pid),
            })
            .collect()
    }
}

pub(crate) struct E2eRun {
    mode: &'static str,
    concurrency: usize,
    elapsed: Duration,
    /// End-to-end latency of every completed message, sorted.
    latencies: Vec<Duration>,
    usage: Vec<Usage>,
}

impl E2eRun {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Prints "… n done after t s" every 5 s while a run lasts.
pub(crate) fn ticker(done: Arc<AtomicUsize>, start: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!(
                "    … {} done after {:.0} s",
                done.load(Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            );
        }
    })
}

/// A submitted message the watcher waits for.
pub(crate) struct Pending {
    message_id: String,
    started: Instant,
    done: oneshot::Sender<anyhow::Result<Duration>>,
}

/// Follows the Jobcenter's WatchStatus stream (opened before the first Submit) and tells
/// each caller when its message reached DELIVERED. Latency = when the watcher saw the final
/// status (the Jobcenter publishes it once the verified receipt is durable) − when the
/// caller started its Submit. One stream for all callers instead of polling GetStatus.
pub(crate) async fn watch(
    mut statuses: tonic::Streaming<pb::MessageStatus>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    let mut waiting: HashMap<String, Pending> = HashMap::new();
    // Final statuses seen before their caller registered (Submit answered, delivery faster).
    let mut early: HashMap<String, (pb::MessageStatus, Instant)> = HashMap::new();
    let settle = |p: Pending, status: &pb::MessageStatus, seen: Instant| {
        let outcome = if status.state == pb::DeliveryState::Delivered as i32 {
            Ok(seen.saturating_duration_since(p.started))
        } else {
            Err(anyhow::anyhow!(
                "message {} ended {:?}, not DELIVERED: {}",
                p.message_id,
                pb::DeliveryState::try_from(status.state),
                status.detail
            ))
        };
        let _ = p.done.send(outcome);
    };
    let mut callers_open = true;
    loop {
        tokio::select! {
            pending = rx.recv(), if callers_open => match pending {
                Some(p) => match early.remove(&p.message_id) {
                    Some((status, seen)) => settle(p, &status, seen),
                    None => {
                        waiting.insert(p.message_id.clone(), p);
                    }
                },
                None => {
                    callers_open = false;
                    if waiting.is_empty() {
                        return Ok(());
                    }
                }
            },
            status = statuses.message() => {
                let Some(status) = status.context("WatchStatus stream")? else {
                    bail!("the Jobcenter ended the WatchStatus stream");
                };
                let seen = Instant::now();
                match waiting.remove(&status.message_id) {
                    Some(p) => settle(p, &status, seen),
                    None => {
                        early.insert(status.message_id.clone(), (status, seen));
                    }
                }
                if !callers_open && waiting.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// `concurrency` tasks each loop for `duration` (or `per_task` messages): Submit a CertificationRequest at the
/// Jobcenter, then wait until the Jobcenter holds the Jugendamt's verified receipt.
pub(crate) async fn kurzdraht_run(
    client: &AgencyClient,
    watcher_client: &AgencyClient,
    requests: &[pb::SubmitRequest],
    concurrency: usize,
    duration: Duration,
    per_task: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let statuses = watcher_client
        .clone()
        .watch_status(pb::WatchStatusRequest {})
        .await
        .context("WatchStatus at the Jobcenter")?
        .into_inner();
    let watcher = tokio::spawn(watch(statuses, rx));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    if requests.is_empty() {
        bail!("no requests to submit");
    }
    for caller in 0..concurrency {
        let request = requests[caller % requests.len()].clone();
        let (mut client, done, tx) = (client.clone(), done.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && latencies.len() < per_task {
                let started = Instant::now();
                let message_id = client
                    .submit(request.clone())
                    .await?
                    .into_inner()
                    .message_id;
                let (done_tx, done_rx) = oneshot::channel();
                tx.send(Pending {
                    message_id,
                    started,
                    done: done_tx,
                })
                .map_err(|_| anyhow::anyhow!("the status watcher stopped"))?;
                let latency = tokio::time::timeout(Duration::from_secs(60), done_rx)
                    .await
                    .map_err(|_| anyhow::anyhow!("a message was not DELIVERED within 60 s"))?
                    .map_err(|_| anyhow::anyhow!("the status watcher stopped"))??;
                latencies.push(latency);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    drop(tx);
    let tick = ticker(done, start);
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("caller task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    tick.abort();
    let watched = watcher.await.context("status watcher task")?;
    if let Some(e) = failure {
        return Err(e.context("kurzdraht submit → DELIVERED"));
    }
    watched?;
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

/// How the traffic and the link of `bench e2e` look.
pub(crate) struct E2eShape {
    /// Persons the messages are about (one consent each).
    pub(crate) persons: usize,
    /// One-way delay of the link between the two ends (zero: plain loopback).
    pub(crate) link_delay: Duration,
}

/// Starts a delaying forwarder to `upstream` (see [`crate::link`]); returns its address.
pub(crate) async fn delayed_link(
    upstream: std::net::SocketAddr,
    delay: Duration,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(crate::link::forward(
        listener, upstream, delay,
    )));
    Ok(addr)
}

/// The most persons `bench e2e` records consents for.
pub(crate) const MAX_PERSONS: usize = 400;

/// Records the benchmark's consent for `subject` at the Jobcenter (recipient: the
/// Jugendamt, purpose U25); returns its id.
pub(crate) async fn record_bench_consent(
    jc_api: &mut AgencyClient,
    subject: pb::Subject,
) -> anyhow::Result<String> {
    let consent = jc_api
        .record_consent(pb::RecordConsentRequest {
            subject: Some(subject),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![pb::Purpose::U25MoveOut as i32],
            categories: bench_categories(),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Written as i32,
            evidence_sha256: vec![0x5e; 32],
            evidence_reference: BENCH_EVIDENCE.into(),
            recorded_by: "Herr Jensen".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    consent
        .consent
        .map(|c| c.consent_id)
        .context("RecordConsent returned no consent")
}

/// Waits until `client`'s node holds consent `id` in force (up to 15 s).
pub(crate) async fn consent_in_force(client: &mut AgencyClient, id: &str) -> anyhow::Result<()> {
    for _ in 0..750 {
        let consents = kurzdraht_client::all_consents(client).await?;
        if consents.iter().any(|c| {
            c.consent.as_ref().is_some_and(|r| r.consent_id == id)
                && c.state == pb::ConsentState::ConsentInForce as i32
        }) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("consent {id} not in force at the Jugendamt after 15 s")
}

pub(crate) fn fmt_opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".into(), fmt_bytes)
}

/// The two agencies of `bench e2e`: their nodes' and their clients' configurations.
struct Agencies {
    jc: NodeConfig,
    ja: NodeConfig,
    jc_client_cfg: ClientConfig,
    ja_client_cfg: ClientConfig,
}

/// The two running `kurzdraht serve` processes.
struct Nodes {
    jc: ServeProcess,
    ja: ServeProcess,
}

/// What `bench e2e` measures: how long, at which concurrencies, about how many persons.
struct E2ePlan {
    seconds: u64,
    duration: Duration,
    concurrency: Vec<usize>,
    persons: usize,
    link_delay: Duration,
    ticks: f64,
}

/// What the runs yielded, for the report.
struct E2eOutcome {
    runs: Vec<E2eRun>,
    resettable: bool,
    /// Messages in the Jugendamt's inbox at the end.
    received: usize,
    /// Per concurrency: the Jobcenter's delivery retries, and how many of them were
    /// RESOURCE_EXHAUSTED.
    retries: Vec<(usize, usize, usize)>,
}

pub(crate) async fn e2e(
    seconds: u64,
    concurrency: Vec<usize>,
    payload_bytes: Option<usize>,
    peer_rate: Option<u32>,
    shape: E2eShape,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let E2eShape {
        persons,
        link_delay,
    } = shape;
    if seconds == 0 || concurrency.is_empty() || concurrency.contains(&0) || peer_rate == Some(0) {
        bail!("--seconds, --peer-rate and every --concurrency must be above 0");
    }
    if !(1..=MAX_PERSONS).contains(&persons) {
        bail!("--persons must be 1 to {MAX_PERSONS}");
    }
    let fed = TempFederation::create(dir, "e2e")?;
    let agencies = set_up_federation(&fed, peer_rate)?;
    let plan = E2ePlan {
        seconds,
        duration: Duration::from_secs(seconds),
        concurrency,
        persons,
        link_delay,
        ticks: clock_ticks(),
    };
    report::print_parameters(&fed, &plan, peer_rate, &agencies.ja);

    // The consent and the request, and a sealed envelope of the same size for the baseline.
    let consent_seed = ids::new_id();
    let reason = match payload_bytes {
        Some(n) => padded_reason(&agencies.jc.signing_key, &consent_seed, n),
        None => REASON.to_string(),
    };
    let body = certification_request(reason.clone());

    let mut links = Vec::new();
    route_through_link(&fed, &agencies.ja, link_delay, &mut links).await?;

    eprintln!("starting the Jobcenter and Jugendamt nodes …");
    let files_of = |id: &str| fed.files_of(id);
    let mut nodes = Nodes {
        jc: ServeProcess::spawn(
            JC,
            &files_of(JC)?.node_config,
            fed.path().join("jobcenter.log"),
        )?,
        ja: ServeProcess::spawn(
            JA,
            &files_of(JA)?.node_config,
            fed.path().join("jugendamt.log"),
        )?,
    };
    let outcome = measure(&mut nodes, &agencies, &plan, &reason, &body, &mut links).await;
    for link in links {
        link.abort();
    }
    let stopped_jc = nodes.jc.stop().await;
    let stopped_ja = nodes.ja.stop().await;
    let outcome = outcome?;
    stopped_jc?;
    stopped_ja?;

    report::print_report(&plan, &agencies.ja, &outcome);
    Ok(ExitCode::SUCCESS)
}

/// Sets up the federation: the Jugendamt's peer rate (`--peer-rate`), then loads both nodes'
/// and both clients' configurations.
fn set_up_federation(fed: &TempFederation, peer_rate: Option<u32>) -> anyhow::Result<Agencies> {
    let files_of = |id: &str| fed.files_of(id);
    if let Some(rate) = peer_rate {
        fed.configure(
            JA,
            "[limits]",
            &format!("peer_requests_per_second = {rate}"),
        )?;
    }
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)?;
    if let Some(rate) = peer_rate {
        if ja.limits.peer_requests_per_second != rate {
            bail!("could not set the Jugendamt's limits.peer_requests_per_second to {rate}");
        }
    }
    let jc_client_cfg = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client_cfg = ClientConfig::load(&files_of(JA)?.client_config)?;
    Ok(Agencies {
        jc,
        ja,
        jc_client_cfg,
        ja_client_cfg,
    })
}

/// With a link delay, points the directory's Jugendamt endpoint at a delaying forwarder, so
/// the Jobcenter (and the Jugendamt Norderstedt) reach the Jugendamt through it; prints the link.
async fn route_through_link(
    fed: &TempFederation,
    ja: &NodeConfig,
    link_delay: Duration,
    links: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    if !link_delay.is_zero() {
        // The Jobcenter (and the Jugendamt Norderstedt) reach the Jugendamt through the link.
        let link = delayed_link(ja.peer_addr, link_delay, links).await?;
        let federation = fed.path().join("federation");
        let endpoint = format!("\"https://{}\"", ja.peer_addr);
        let mut named = false;
        pki::update_directory(&federation, |text| {
            named = text.contains(&endpoint);
            text.replace(&endpoint, &format!("\"https://{link}\""))
        })?;
        if !named {
            bail!("{} names no endpoint {endpoint}", federation.display());
        }
    }
    println!(
        "link:       {}",
        if link_delay.is_zero() {
            "plain loopback".to_string()
        } else {
            format!(
                "{} ms one way between Jobcenter and Jugendamt, and between the baseline's ends (a delaying TCP forwarder on loopback)",
                link_delay.as_millis()
            )
        }
    );
    Ok(())
}

/// Against the two running nodes: records the consents, starts the baseline's bare peer, then
/// the baseline run and the kurzdraht run at each concurrency.
async fn measure(
    nodes: &mut Nodes,
    agencies: &Agencies,
    plan: &E2ePlan,
    reason: &str,
    body: &pb::MessageBody,
    links: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<E2eOutcome> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut jc_api = client_until(&agencies.jc_client_cfg, until).await?;
    let mut ja_api = client_until(&agencies.ja_client_cfg, until).await?;
    nodes.jc.check_running()?;
    nodes.ja.check_running()?;
    let requests = record_consents(&mut jc_api, &mut ja_api, plan.persons, reason).await?;
    let consent_id = requests[0].consent_id.clone();
    let sealed = seal_outgoing(
        &agencies.jc.signing_key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        &consent_id,
        body,
        clock::now_ms(),
        agencies.jc.delivery.deadline,
    );
    println!(
        "message:    CertificationRequest, payload {} B, signed envelope {} B (the baseline sends an envelope of this size)",
        sealed.envelope.payload.len(),
        envelope_bytes(&sealed)
    );

    let (bare_stop, bare, bare_client) = start_bare_peer(agencies, plan.link_delay, links).await?;

    let mut resettable = true;
    let mut runs = Vec::new();
    let mut retries = Vec::new();
    for &c in &plan.concurrency {
        let run =
            measure_baseline(&bare_client, &sealed.envelope, c, plan, &mut resettable).await?;
        runs.push(run);
        let (run, retried) = measure_kurzdraht(
            nodes,
            agencies,
            &jc_api,
            &requests,
            c,
            plan,
            &mut resettable,
        )
        .await?;
        retries.push(retried);
        runs.push(run);
    }
    let _ = bare_stop.send(());
    let _ = bare.await;
    let received = inbox_len(&mut ja_api).await?;
    anyhow::Ok(E2eOutcome {
        runs,
        resettable,
        received,
        retries,
    })
}

/// Records one consent per person at the Jobcenter and waits until each is in force at the
/// Jugendamt; returns one Submit request per person.
async fn record_consents(
    jc_api: &mut AgencyClient,
    ja_api: &mut AgencyClient,
    persons: usize,
    reason: &str,
) -> anyhow::Result<Vec<pb::SubmitRequest>> {
    let mut requests = Vec::with_capacity(persons);
    for person in 0..persons {
        let consent_id = record_bench_consent(jc_api, subject_of_person(person)).await?;
        requests.push(pb::SubmitRequest {
            recipient: JA.into(),
            consent_id,
            in_reply_to: String::new(),
            idempotency_key: String::new(),
            body: Some(certification_request_about(
                subject_of_person(person),
                reason.to_string(),
            )),
        });
    }
    for r in &requests {
        consent_in_force(ja_api, &r.consent_id).await?;
    }
    Ok(requests)
}

/// The kurzdraht path at concurrency `c`: warm-up, then the measured run of Submits watched to
/// DELIVERED; returns the run and the Jobcenter's delivery retries during it.
async fn measure_kurzdraht(
    nodes: &mut Nodes,
    agencies: &Agencies,
    jc_api: &AgencyClient,
    requests: &[pb::SubmitRequest],
    c: usize,
    plan: &E2ePlan,
    resettable: &mut bool,
) -> anyhow::Result<(E2eRun, (usize, usize, usize))> {
    let procs_node = [
        Watched {
            label: "jobcenter node",
            pid: nodes.jc.pid(),
        },
        Watched {
            label: "jugendamt node",
            pid: nodes.ja.pid(),
        },
        Watched {
            label: "bench (callers)",
            pid: "self".into(),
        },
    ];
    eprintln!(
        "kurzdraht, concurrency {c}: warm-up, then {} s …",
        plan.seconds
    );
    let (_, warm) = kurzdraht_run(
        jc_api,
        jc_api,
        &requests[..1],
        1,
        Duration::from_secs(60),
        WARM_UP,
    )
    .await?;
    if warm.len() != WARM_UP {
        bail!("warm-up: {} of {WARM_UP} messages delivered", warm.len());
    }
    nodes.jc.check_running()?;
    nodes.ja.check_running()?;
    // separate channels: the callers' and the watcher's
    let watcher_api = client_until(
        &agencies.jc_client_cfg,
        Instant::now() + Duration::from_secs(5),
    )
    .await?;
    let retries_before = nodes.jc.count_in_log(RETRY_LOG, "ResourceExhausted");
    let meter = UsageMeter::start(&procs_node, resettable);
    let (elapsed, latencies) =
        kurzdraht_run(jc_api, &watcher_api, requests, c, plan.duration, usize::MAX).await?;
    let usage = meter.stop(&procs_node, plan.ticks);
    let retries_after = nodes.jc.count_in_log(RETRY_LOG, "ResourceExhausted");
    let retried = (
        c,
        retries_after.0 - retries_before.0,
        retries_after.1 - retries_before.1,
    );
    let run = E2eRun {
        mode: "kurzdraht",
        concurrency: c,
        elapsed,
        latencies,
        usage,
    };
    eprintln!(
        "    done: {} messages, {:.0}/s",
        run.latencies.len(),
        run.rate()
    );
    Ok((run, retried))
}
