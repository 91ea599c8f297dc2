//! The standard gRPC services on the AgencyApi port: health checking (grpc.health.v1) and
//! server reflection, usable without a token, as load balancers and grpcurl expect.

use kurzdraht_node::tls::api_client_tls;
use kurzdraht_tests::*;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_kurzdraht_services() {
    let h = start().await;
    let mut reflection = ServerReflectionClient::new(channel(&h, JA).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"kurzdraht.v1.AgencyApi".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"kurzdraht.v1.PeerExchange".to_string()),
        "{names:?}"
    );
}
