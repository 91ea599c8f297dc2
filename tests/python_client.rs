//! An independent client works: `tests/python/client_test.py` (grpcio from PyPI, stubs
//! generated from `proto/` with grpc_tools.protoc at run time) checks grpc.health.v1, records
//! a consent and submits a certification request to a running node; then this test sees the
//! request DELIVERED, with a receipt that verifies, in the Jugendamt's inbox.
//!
//! It needs python3 with grpcio and grpcio-tools; when they are missing it installs the pinned
//! versions with pip itself (the project installs what its tests need). Without python3, or
//! when pip cannot install them, it fails (it does not skip), saying what to install.

use kurzdraht_proto::v1 as pb;
use kurzdraht_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

/// Runs the Python client to completion (at most two minutes); returns its stdout.
fn run_python_client(client_toml: &Path, ca: &Path, token: &str, recipient: &str) -> String {
    let script = repo().join("tests/python/client_test.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--client")
        .arg(client_toml)
        .arg("--ca")
        .arg(ca)
        .arg("--recipient")
        .arg(recipient)
        .arg("--proto-dir")
        .arg(repo().join("proto"))
        .env("KURZDRAHT_TOKEN", token)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
    let started = Instant::now();
    while child.try_wait().expect("wait for python3").is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("client_test.py did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("python3's output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "client_test.py lacks grpcio: run `{INSTALL}`\n{stderr}"
    );
    assert!(
        out.status.success(),
        "client_test.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    stdout
}

fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("client_test.py printed no {key}:\n{stdout}"))
}

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
    let ca = h.fed.dir.join("ca.pem");
    let token = h.token(JC);
    let stdout = tokio::task::spawn_blocking(move || {
        run_python_client(&files.client_config, &ca, &token, JA)
    })
    .await
    .expect("the Python client's task");

    let consent = value(&stdout, "consent_id");
    let message = value(&stdout, "message_id");
    let notice = value(&stdout, "notice_message_id");
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
