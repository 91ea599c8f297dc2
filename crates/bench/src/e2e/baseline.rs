//! The baseline of `bench e2e`: a bare PeerExchange in this process answering at once, the
//! Jobcenter's client to it, and the runs of bare calls.

use super::{delayed_link, ticker, Agencies, E2ePlan, E2eRun, UsageMeter, Watched, WARM_UP};
use crate::common::*;
use kurzdraht_node::config::NodeConfig;
use kurzdraht_proto::v1 as pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

type BareServer = JoinHandle<Result<(), tonic::transport::Error>>;

/// The baseline's bare peer, on its own loopback port with the Jugendamt's TLS (behind its
/// own delaying link if there is a link delay); returns its stop switch, its task and the
/// Jobcenter's client to it.
pub(super) async fn start_bare_peer(
    agencies: &Agencies,
    link_delay: Duration,
    links: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<(oneshot::Sender<()>, BareServer, PeerClient)> {
    // Bound before anything connects (a port merely picked free could be unbound when the
    // first call, or the link's first connection, arrives).
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let bare_addr = listener.local_addr()?;
    let (bare_stop, bare_stopped) = oneshot::channel::<()>();
    let bare = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .tls_config(kurzdraht_node::tls::peer_server_tls(&agencies.ja.tls))?
        .add_service(pb::peer_exchange_server::PeerExchangeServer::new(BarePeer))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = bare_stopped.await;
            },
        );
    let bare = tokio::spawn(bare);
    let bare_target = if link_delay.is_zero() {
        bare_addr
    } else {
        delayed_link(bare_addr, link_delay, links).await?
    };
    let bare_client = peer_client(&agencies.jc, &format!("https://{bare_target}"))?;
    Ok((bare_stop, bare, bare_client))
}

/// The baseline at concurrency `c`: warm-up, then the measured run of bare calls.
pub(super) async fn measure_baseline(
    bare_client: &PeerClient,
    envelope: &pb::SignedEnvelope,
    c: usize,
    plan: &E2ePlan,
    resettable: &mut bool,
) -> anyhow::Result<E2eRun> {
    let procs_bare = [Watched {
        label: "bench (client+server)",
        pid: "self".into(),
    }];
    eprintln!(
        "baseline, concurrency {c}: warm-up, then {} s …",
        plan.seconds
    );
    let mut warm = bare_client.clone();
    for _ in 0..WARM_UP {
        warm.deliver(envelope.clone()).await?;
    }
    let meter = UsageMeter::start(&procs_bare, resettable);
    let (elapsed, latencies) = baseline_run(bare_client, envelope, c, plan.duration).await?;
    let usage = meter.stop(&procs_bare, plan.ticks);
    let run = E2eRun {
        mode: "baseline",
        concurrency: c,
        elapsed,
        latencies,
        usage,
    };
    eprintln!(
        "    done: {} calls, {:.0}/s",
        run.latencies.len(),
        run.rate()
    );
    Ok(run)
}
