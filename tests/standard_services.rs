//! The standard gRPC services on the AgencyApi port: health checking (grpc.health.v1) and
//! server reflection (v1 and v1alpha), usable without a token, as load balancers, grpcurl
//! and grpcio's reflection client expect.

use kurzdraht_client::connection::api_client_tls;
use kurzdraht_testkit::*;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

async fn channel(h: &Harness, agency: &str) -> Channel {
    let c = h.fed.client_config(agency).unwrap();
    Endpoint::from_shared(c.endpoint.clone())
        .unwrap()
        .tls_config(api_client_tls(&c.ca_pem, agency))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_for_the_node_and_its_services() {
    let h = start().await;
    let mut health = HealthClient::new(channel(&h, JC).await);
    for service in ["", "kurzdraht.v1.AgencyApi", "kurzdraht.v1.PeerExchange"] {
        let status = wait_until(&format!("{service:?} SERVING"), || {
            let mut health = health.clone();
            async move {
                let r = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                if r.status == ServingStatus::Serving as i32 {
                    Ok(r.status)
                } else {
                    Err(format!("{}", r.status))
                }
            }
        })
        .await;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
}

/// What the API port's reflection lists, asked in `version` (v1 or v1alpha): exactly the
/// services served there — the AgencyApi, health and both reflection versions, not the
/// PeerExchange (served on the peer port only).
async fn listed_services(channel: Channel, alpha: bool) -> Vec<String> {
    if alpha {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner()
            .message()
            .await
            .expect("an answer")
            .expect("a message");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer: {response:?}");
        };
        list.service.into_iter().map(|s| s.name).collect()
    } else {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1 reflection is served")
            .into_inner()
            .message()
            .await
            .expect("an answer")
            .expect("a message");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer: {response:?}");
        };
        list.service.into_iter().map(|s| s.name).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_of_the_api_port_in_v1_and_v1alpha() {
    let h = start().await;
    let mut want = vec![
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "kurzdraht.v1.AgencyApi",
    ];
    want.sort_unstable();
    for alpha in [false, true] {
        let mut names = listed_services(channel(&h, JA).await, alpha).await;
        names.sort_unstable();
        assert_eq!(
            names,
            want,
            "listed by {}",
            if alpha { "v1alpha" } else { "v1" }
        );
    }
    // Every listed service resolves to its file, health included.
    let mut reflection = ServerReflectionClient::new(channel(&h, JA).await);
    for symbol in want {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let response = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                response.message_response,
                Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
            ),
            "{symbol}: {response:?}"
        );
    }
}
