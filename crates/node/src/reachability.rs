//! Whether the node's peers answer. A probe connects to a peer's PeerExchange endpoint as
//! the node's deliveries do — mutual TLS with this node's certificate, the peer's
//! certificate must be of the federation CA and name the peer — and asks the peer's
//! `grpc.health.v1` there about `kurzdraht.v1.PeerExchange`. So it proves the name
//! resolution, the route and firewall, both certificates and that the peer serves.
//!
//! `config check --reach-peers` probes every peer once; a running node probes them every
//! `[delivery] peer_probe_secs` (default 30 s) for the gauge `kurzdraht_peer_reachable{peer}`
//! and logs when a peer's state changes.

use crate::{config::TlsMaterial, directory::Agency, node::Node, tls};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// How long connecting to a peer and its answer may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The service a probe asks the peer's health service about.
pub const PROBED_SERVICE: &str = "kurzdraht.v1.PeerExchange";

/// An error with its causes, for people (tonic's transport errors say little on their own).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Probes `peer` with this node's TLS material; why it failed, if it did.
pub async fn probe(
    own: &TlsMaterial,
    peer: &Agency,
    trust: Arc<dyn tls::PeerTrust>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(peer.endpoint.clone())
        .map_err(|e| format!("endpoint {}: {}", peer.endpoint, with_causes(&e)))?;
    let endpoint = tls::peer_endpoint(endpoint, own, &peer.id, trust)
        .map_err(|e| format!("TLS set-up: {}", with_causes(&e)))?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let channel = tokio::time::timeout(PROBE_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within {PROBE_TIMEOUT:?}",
                peer.endpoint
            )
        })?
        .map_err(|e| format!("cannot connect to {}: {}", peer.endpoint, with_causes(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: PROBED_SERVICE.into(),
        })
        .await
        .map_err(|s| {
            format!(
                "{} did not answer the health check ({:?}: {}){}",
                peer.endpoint,
                s.code(),
                s.message(),
                std::error::Error::source(&s)
                    .map(|e| format!(": {}", with_causes(e)))
                    .unwrap_or_default()
            )
        })?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!(
            "{} answers {} for {PROBED_SERVICE}",
            peer.endpoint,
            other.as_str_name()
        )),
    }
}

/// Probes every peer of the node's directory every `every`, until the node closes.
pub(crate) fn spawn_prober(node: &Node, every: Duration) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    let mut closing = node.closing();
    tokio::spawn(async move {
        loop {
            let directory = node.directory();
            let peers: Vec<&Agency> = directory
                .agencies()
                .filter(|a| a.id != node.agency())
                .collect();
            let results = futures_util::future::join_all(
                peers
                    .iter()
                    .map(|p| probe(node.tls(), p, Arc::new(node.shared().clone()))),
            )
            .await;
            let before = node.reachability();
            for (peer, result) in peers.iter().zip(results) {
                let reached = result.is_ok();
                if before.get(&peer.id) != Some(&reached) {
                    match result {
                        Ok(()) => {
                            tracing::info!(agency = node.agency(), peer = %peer.id, "peer reachable")
                        }
                        Err(why) => {
                            tracing::warn!(agency = node.agency(), peer = %peer.id, reason = %why, "peer unreachable")
                        }
                    }
                }
                node.set_reachable(&peer.id, reached);
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = closing.wait_for(|c| *c) => break,
            }
        }
    })
}
