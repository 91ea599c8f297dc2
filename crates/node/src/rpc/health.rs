//! The standard gRPC services beside the AgencyApi: `grpc.health.v1.Health` (SERVING while
//! the store reads and writes, NOT_SERVING when it does not or the node is shutting down)
//! and server reflection (v1 and v1alpha) over the kurzdraht contract, listing the services
//! the API port serves, so that grpcurl-style tools and load balancers work without the
//! .proto files.

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

/// The services the API port serves, as reflection lists them. `kurzdraht.v1.PeerExchange`
/// is not among them: it is served on the peer port only (its types stay resolvable, they
/// are part of the contract).
pub const API_PORT_SERVICES: [&str; 4] = [
    "kurzdraht.v1.AgencyApi",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(kurzdraht_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in API_PORT_SERVICES {
        builder = builder.with_service_name(name);
    }
    builder
}

/// Server reflection in both versions clients speak: `grpc.reflection.v1` (grpcurl, tonic)
/// and `grpc.reflection.v1alpha` (the reflection clients of grpcio and most older tools).
#[allow(clippy::type_complexity)]
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    NodeError,
> {
    let failed =
        |e: tonic_reflection::server::Error| NodeError::Internal(format!("reflection: {e}"));
    Ok((
        reflection_builder().build_v1().map_err(failed)?,
        reflection_builder().build_v1alpha().map_err(failed)?,
    ))
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
