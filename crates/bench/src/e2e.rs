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

/// The baseline's PeerExchange: answers every delivery at once with an empty receipt — no
/// signature, no consent check, no storage.
pub(crate) struct BarePeer;

#[tonic::async_trait]
impl pb::peer_exchange_server::PeerExchange for BarePeer {
    async fn deliver(
        &self,
        _req: tonic::Request<pb::SignedEnvelope>,
    ) -> Result<tonic::Response<pb::SignedReceipt>, tonic::Status> {
        Ok(tonic::Response::new(pb::SignedReceipt::default()))
    }

    async fn deliver_batch(
        &self,
        _req: tonic::Request<pb::EnvelopeBatch>,
    ) -> Result<tonic::Response<pb::BatchOutcome>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the baseline answers unary calls only",
        ))
    }

    async fn list_delivered(
        &self,
        _req: tonic::Request<pb::ListDeliveredRequest>,
    ) -> Result<tonic::Response<pb::ListDeliveredResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }

    async fn fetch_delivered(
        &self,
        _req: tonic::Request<pb::FetchDeliveredRequest>,
    ) -> Result<tonic::Response<pb::FetchDeliveredResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }

    async fn list_received(
        &self,
        _req: tonic::Request<pb::ListReceivedRequest>,
    ) -> Result<tonic::Response<pb::ListReceivedResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }
}

type PeerClient = pb::peer_exchange_client::PeerExchangeClient<tonic::transport::Channel>;

/// A PeerExchange client of the Jobcenter to `endpoint`, built as the delivery worker does.
pub(crate) fn peer_client(jc: &NodeConfig, endpoint: &str) -> anyhow::Result<PeerClient> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
        .tls_config(kurzdraht_node::tls::peer_client_tls(&jc.tls, JA))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(jc.delivery.request_timeout)
        .connect_lazy();
    Ok(PeerClient::new(channel))
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

/// `concurrency` tasks call Deliver on the bare peer in a loop for `duration`.
pub(crate) async fn baseline_run(
    client: &PeerClient,
    envelope: &pb::SignedEnvelope,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (mut client, envelope, done) = (client.clone(), envelope.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.deliver(envelope.clone()).await?;
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
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
    if let Some(e) = failure {
        return Err(e.context("baseline call"));
    }
    latencies.sort_unstable();
    Ok((elapsed, latencies))
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
    let duration = Duration::from_secs(seconds);
    let fed = TempFederation::create(dir, "e2e")?;
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
    let ticks = clock_ticks();

    println!("kurzdraht-bench e2e — baseline (bare tonic call over mutual TLS) vs. the full kurzdraht path");
    print_machine(fed.path());
    println!(
        "parameters: {seconds} s per run, concurrency {}, {WARM_UP} warm-up calls/messages before each run, {persons} persons (one consent each; caller k writes about person k mod {persons})",
        concurrency
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("nodes:      Jobcenter and Jugendamt Kreis Segeberg as two `kurzdraht serve` processes of this binary,");
    println!(
        "            real PKI (pki init), default node.toml{} (log level info to a file; Jugendamt admits {} deliveries/s, {} in flight per peer)",
        if peer_rate.is_some() { " except --peer-rate" } else { "" },
        ja.limits.peer_requests_per_second,
        ja.limits.peer_concurrent_requests
    );
    println!("baseline:   a PeerExchange server in this process that answers Deliver at once with an empty receipt,");
    println!("            served with the Jugendamt's peer TLS config (mutual TLS), called with a client built like the");
    println!("            delivery worker's (Jobcenter's certificate), one shared HTTP/2 channel; latency = call round trip");
    println!("kurzdraht:  Submit (Jobcenter AgencyApi, TLS + token) → consent check → durable outbox → signed envelope →");
    println!("            DeliverBatch (one FIFO worker per delivery lane of the peer — a person's consent chain and messages share a lane —,");
    println!("            up to 256 due messages per batch) → verify, consent check,");
    println!("            durable inbox → receipts under one signature per batch, each verified and stored by the Jobcenter;");
    println!("            one shared HTTP/2 channel for the callers, a second for the WatchStatus stream;");
    println!("            latency = when the WatchStatus stream showed DELIVERED (published after the Jobcenter's flush) − Submit start");
    println!("            each caller waits for DELIVERED before its next Submit (closed loop)");

    // The consent and the request, and a sealed envelope of the same size for the baseline.
    let consent_seed = ids::new_id();
    let reason = match payload_bytes {
        Some(n) => padded_reason(&jc.signing_key, &consent_seed, n),
        None => REASON.to_string(),
    };
    let body = certification_request(reason.clone());

    let mut links = Vec::new();
    if !link_delay.is_zero() {
        // The Jobcenter (and the Jugendamt Norderstedt) reach the Jugendamt through the link.
        let link = delayed_link(ja.peer_addr, link_delay, &mut links).await?;
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

    eprintln!("starting the Jobcenter and Jugendamt nodes …");
    let mut jc_proc = ServeProcess::spawn(
        JC,
        &files_of(JC)?.node_config,
        fed.path().join("jobcenter.log"),
    )?;
    let mut ja_proc = ServeProcess::spawn(
        JA,
        &files_of(JA)?.node_config,
        fed.path().join("jugendamt.log"),
    )?;
    let outcome = async {
        let until = Instant::now() + Duration::from_secs(30);
        let mut jc_api = client_until(&jc_client_cfg, until).await?;
        let mut ja_api = client_until(&ja_client_cfg, until).await?;
        jc_proc.check_running()?;
        ja_proc.check_running()?;
        let mut requests = Vec::with_capacity(persons);
        for person in 0..persons {
            let consent_id = record_bench_consent(&mut jc_api, subject_of_person(person)).await?;
            requests.push(pb::SubmitRequest {
                recipient: JA.into(),
                consent_id,
                in_reply_to: String::new(),
                idempotency_key: String::new(),
                body: Some(certification_request_about(
                    subject_of_person(person),
                    reason.clone(),
                )),
            });
        }
        for r in &requests {
            consent_in_force(&mut ja_api, &r.consent_id).await?;
        }
        let consent_id = requests[0].consent_id.clone();
        let sealed = seal_outgoing(
            &jc.signing_key,
            JC,
            MessageKind::CertificationRequest,
            JA,
            &consent_id,
            &body,
            clock::now_ms(),
            jc.delivery.deadline,
        );
        println!(
            "message:    CertificationRequest, payload {} B, signed envelope {} B (the baseline sends an envelope of this size)",
            sealed.envelope.payload.len(),
            envelope_bytes(&sealed)
        );

        // The baseline's bare peer, on its own loopback port with the Jugendamt's TLS.
        let bare_addr = kurzdraht_testkit::free_loopback_addrs(1)?[0];
        let (bare_stop, bare_stopped) = oneshot::channel::<()>();
        let bare = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .tls_config(kurzdraht_node::tls::peer_server_tls(&ja.tls))?
            .add_service(pb::peer_exchange_server::PeerExchangeServer::new(BarePeer))
            .serve_with_shutdown(bare_addr, async move {
                let _ = bare_stopped.await;
            });
        let bare = tokio::spawn(bare);
        let bare_target = if link_delay.is_zero() {
            bare_addr
        } else {
            delayed_link(bare_addr, link_delay, &mut links).await?
        };
        let bare_client = peer_client(&jc, &format!("https://{bare_target}"))?;

        let procs_node = [
            Watched {
                label: "jobcenter node",
                pid: jc_proc.pid(),
            },
            Watched {
                label: "jugendamt node",
                pid: ja_proc.pid(),
            },
            Watched {
                label: "bench (callers)",
                pid: "self".into(),
            },
        ];
        let procs_bare = [Watched {
            label: "bench (client+server)",
            pid: "self".into(),
        }];
        let mut resettable = true;
        let mut runs = Vec::new();
        let mut retries = Vec::new();
        for &c in &concurrency {
            eprintln!("baseline, concurrency {c}: warm-up, then {seconds} s …");
            let mut warm = bare_client.clone();
            for _ in 0..WARM_UP {
                warm.deliver(sealed.envelope.clone()).await?;
            }
            let meter = UsageMeter::start(&procs_bare, &mut resettable);
            let (elapsed, latencies) =
                baseline_run(&bare_client, &sealed.envelope, c, duration).await?;
            let usage = meter.stop(&procs_bare, ticks);
            let run = E2eRun {
                mode: "baseline",
                concurrency: c,
                elapsed,
                latencies,
                usage,
            };
            eprintln!("    done: {} calls, {:.0}/s", run.latencies.len(), run.rate());
            runs.push(run);

            eprintln!("kurzdraht, concurrency {c}: warm-up, then {seconds} s …");
            let (_, warm) = kurzdraht_run(
                &jc_api,
                &jc_api,
                &requests[..1],
                1,
                Duration::from_secs(60),
                WARM_UP,
            )
            .await?;
            if warm.len() != WARM_UP {
                bail!("warm-up: {} of {WARM_UP} messages delivered", warm.len());
            }
            jc_proc.check_running()?;
            ja_proc.check_running()?;
            // separate channels: the callers' and the watcher's
            let watcher_api = client_until(&jc_client_cfg, Instant::now() + Duration::from_secs(5)).await?;
            let retries_before = jc_proc.count_in_log(RETRY_LOG, "ResourceExhausted");
            let meter = UsageMeter::start(&procs_node, &mut resettable);
            let (elapsed, latencies) =
                kurzdraht_run(&jc_api, &watcher_api, &requests, c, duration, usize::MAX).await?;
            let usage = meter.stop(&procs_node, ticks);
            let retries_after = jc_proc.count_in_log(RETRY_LOG, "ResourceExhausted");
            retries.push((
                c,
                retries_after.0 - retries_before.0,
                retries_after.1 - retries_before.1,
            ));
            let run = E2eRun {
                mode: "kurzdraht",
                concurrency: c,
                elapsed,
                latencies,
                usage,
            };
            eprintln!("    done: {} messages, {:.0}/s", run.latencies.len(), run.rate());
            runs.push(run);
        }
        let _ = bare_stop.send(());
        let _ = bare.await;
        let received = inbox_len(&mut ja_api).await?;
        anyhow::Ok((runs, resettable, received, retries))
    }
    .await;
    for link in links {
        link.abort();
    }
    let stopped_jc = jc_proc.stop().await;
    let stopped_ja = ja_proc.stop().await;
    let (runs, resettable, received, retries) = outcome?;
    stopped_jc?;
    stopped_ja?;

    println!();
    println!(
        "{:<10} {:>5} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}   {:<22} {:>14} {:>10}",
        "mode",
        "conc",
        "messages",
        "seconds",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "process",
        "CPU s/1k msgs",
        "peak RSS"
    );
    for r in &runs {
        let n = r.latencies.len();
        for (i, u) in r.usage.iter().enumerate() {
            let cpu = u.cpu_secs.map_or_else(
                || "n/a".into(),
                |s| format!("{:.3}", s * 1000.0 / n.max(1) as f64),
            );
            let figures = if i == 0 {
                format!(
                    "{:<10} {:>5} {:>8} {:>8.2} {:>9.1} {:>8.2} {:>8.2} {:>9.2}",
                    r.mode,
                    r.concurrency,
                    n,
                    r.elapsed.as_secs_f64(),
                    r.rate(),
                    ms(percentile(&r.latencies, 50.0)),
                    ms(percentile(&r.latencies, 99.0)),
                    ms(percentile(&r.latencies, 99.9)),
                )
            } else {
                format!("{:72}", "")
            };
            println!(
                "{figures}   {:<22} {:>14} {:>10}",
                u.label,
                cpu,
                fmt_opt_bytes(u.peak_rss)
            );
        }
    }
    println!(
        "(peak RSS: VmHWM {}; CPU: utime+stime from /proc/<pid>/stat at {ticks} ticks/s, all threads)",
        if resettable {
            "reset before each run, so each figure is that run's peak"
        } else {
            "could not be reset here, so each figure is the process's peak so far"
        }
    );
    println!();
    println!(
        "{:>5} {:>12} {:>13} {:>16}",
        "conc", "baseline/s", "kurzdraht/s", "kurzdraht/base"
    );
    let mut ratio_at_max = None;
    let mut p99_at_1 = None;
    for &c in &concurrency {
        let find = |m: &str| runs.iter().find(|r| r.mode == m && r.concurrency == c);
        if let (Some(b), Some(k)) = (find("baseline"), find("kurzdraht")) {
            let ratio = k.rate() / b.rate().max(1e-9);
            println!(
                "{c:>5} {:>12.1} {:>13.1} {:>15.2}%",
                b.rate(),
                k.rate(),
                ratio * 100.0
            );
            if c == 128 {
                ratio_at_max = Some(ratio);
            }
            if c == 1 {
                p99_at_1 = Some(ms(percentile(&k.latencies, 99.0)));
            }
        }
    }
    println!();
    let retries: Vec<String> = retries
        .iter()
        .map(|(c, n, rate)| format!("c={c}: {n} ({rate} RESOURCE_EXHAUSTED)"))
        .collect();
    println!(
        "Jobcenter delivery retries during the kurzdraht runs (from its log): {}",
        retries.join(", ")
    );
    println!(
        "  (RESOURCE_EXHAUSTED: refused by the Jugendamt's per-peer admission, limits.peer_requests_per_second = {}, burst one second's worth)",
        ja.limits.peer_requests_per_second
    );
    println!();
    println!("targets of the issue:");
    match ratio_at_max {
        Some(r) => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: {:.2}% — {}",
            r * 100.0,
            if r >= 0.5 { "met" } else { "NOT met" }
        ),
        None => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: not measured (no run at 128)"
        ),
    }
    match p99_at_1 {
        Some(p) => println!(
            "  kurzdraht p99 < 5 ms at concurrency 1: {p:.2} ms — {}",
            if p < 5.0 { "met" } else { "NOT met" }
        ),
        None => println!("  kurzdraht p99 < 5 ms at concurrency 1: not measured (no run at 1)"),
    }
    let submitted: usize = runs
        .iter()
        .filter(|r| r.mode == "kurzdraht")
        .map(|r| r.latencies.len() + WARM_UP)
        .sum();
    println!(
        "Jugendamt inbox holds {received} messages: {submitted} requests (measured + warm-up) + {persons} consent notices = {} — {}",
        submitted + persons,
        if received == submitted + persons { "as expected" } else { "MISMATCH" }
    );
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    Ok(ExitCode::SUCCESS)
}
