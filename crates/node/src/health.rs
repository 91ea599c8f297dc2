//! The standard gRPC services beside the AgencyApi: `grpc.health.v1.Health` (SERVING while
//! the store reads and writes, NOT_SERVING when it does not or the node is shutting down)
//! and server reflection over the kurzdraht contract, so that grpcurl-style tools and load
//! balancers work without the .proto files.

use crate::{node::Node, NodeError};
use std::time::Duration;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service names the health service reports on ("" is the node as a whole).
pub const HEALTH_SERVICES: [&str; 3] = ["", "kurzdraht.v1.AgencyApi", "kurzdraht.v1.PeerExchange"];

/// The health service and the reporter that keeps it up to date.
pub fn health_service() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// The reflection service for the kurzdraht contract.
pub fn reflection_service() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    NodeError,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kurzdraht_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Tls(format!("reflection: {e}")))
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Probes the store every `every` and reports; NOT_SERVING from the moment the node closes.
pub(crate) fn spawn_health(
    node: &Node,
    reporter: HealthReporter,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    let mut closing = node.closing();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let status = match node.ledger().probe(node.now_ms()) {
                Ok(()) => ServingStatus::Serving,
                Err(e) => {
                    tracing::error!(error = %e, "store unusable: reporting NOT_SERVING");
                    ServingStatus::NotServing
                }
            };
            if last != Some(status) {
                set_all(&reporter, status).await;
                last = Some(status);
            }
            let closed = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = closing.wait_for(|c| *c) => true,
            };
            if closed {
                break;
            }
        }
        set_all(&reporter, ServingStatus::NotServing).await;
    })
}
