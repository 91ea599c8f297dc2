//! An independent client works: `tests/python/client_test.py` (grpcio from PyPI, stubs
//! generated from `proto/` with grpc_tools.protoc at run time) checks grpc.health.v1, records
//! a consent and submits a certification request to a running node; then this test sees the
//! request DELIVERED, with a receipt that verifies, in the Jugendamt's inbox.
//!
//! A second test lists the API port's services with grpcio's reflection client.
//!
//! It needs python3 with grpcio, grpcio-tools and grpcio-reflection; when they are missing
//! it installs the pinned versions with pip itself (the project installs what its tests
//! need). Without python3, or when pip cannot install them, it fails (it does not skip),
//! saying what to install.

use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_records_a_consent_and_submits_a_certification_request() {
    require_python_grpc();
    let h = start().await;
    let files = h
        .fed
        .agencies
        .iter()
        .find(|a| a.id == JC)
        .expect("the Jobcenter's files")
        .clone();
    let stdout = tokio::task::spawn_blocking(move || {
        run_python_client(&files.client_config, JA, Duration::from_secs(120))
    })
    .await
    .expect("the Python client's task");

    let consent = printed(&stdout, "consent_id");
    let message = printed(&stdout, "message_id");
    let notice = printed(&stdout, "notice_message_id");
    let jc = h.client(JC).await;
    wait_for_state(&jc, notice, pb::DeliveryState::Delivered).await;
    let status = wait_for_state(&jc, message, pb::DeliveryState::Delivered).await;
    assert_eq!(status.consent_id, consent);
    assert_eq!(status.kind, pb::MessageKind::CertificationRequest as i32);

    // The Jugendamt holds the request under that consent; its receipt verifies.
    let ja = h.client(JA).await;
    let items = wait_for_inbox_len(&ja, 2).await;
    let item = items
        .iter()
        .find(|i| i.message_id == message)
        .expect("the request in the Jugendamt's inbox");
    assert_eq!(item.sender, JC);
    assert_eq!(item.consent_id, consent);
    verify_delivery(&h, JC, JA, &status, item);
    let held = wait_for_consent_state(&ja, consent, pb::ConsentState::ConsentInForce).await;
    let record = held.consent.expect("the replicated record");
    assert_eq!(record.evidence_sha256.len(), 32);
    assert_eq!(record.form, pb::ConsentForm::Written as i32);
}

/// grpcio's own reflection client (grpcio-reflection, which speaks only
/// grpc.reflection.v1alpha) lists exactly the services of the API port — the AgencyApi,
/// health and both reflection versions, not the PeerExchange — and resolves each to its
/// methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reflection_client_lists_the_api_ports_services() {
    require_python_grpc();
    let h = start().await;
    let client = h
        .fed
        .agencies
        .iter()
        .find(|a| a.id == JA)
        .expect("the Jugendamt's files")
        .client_config
        .clone();
    let stdout = tokio::task::spawn_blocking(move || {
        run_python_script(
            "reflection_test.py",
            &["--client".as_ref(), client.as_os_str()],
            Duration::from_secs(60),
        )
    })
    .await
    .expect("the Python client's task");
    let services: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("service="))
        .collect();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "kurzdraht.v1.AgencyApi",
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("methods=kurzdraht.v1.AgencyApi:RecordConsent,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("methods=grpc.health.v1.Health:Check,Watch"),
        "{stdout}"
    );
}
