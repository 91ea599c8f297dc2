//! Revoking a compromised TLS certificate in the directory (deploy/README.md §6), on three
//! real nodes (mutual TLS on loopback, real files, real stores): once the operator's newer
//! directory lists the Jobcenter's certificate as revoked, and without a restart, the
//! Jobcenter can no longer deliver (the Jugendamt refuses its client certificate, also on a
//! connection opened before) nor receive (the Jugendamt refuses its server certificate in
//! the handshake); the older directory cannot undo it; `config check` refuses the node
//! (exit 4, naming tls.pem). A renewed certificate of the same agency, not revoked, works:
//! the messages held back go.

use kurzdraht_node::directory::Directory;
use kurzdraht_node::directory_update::{self, Outcome, Source};
use kurzdraht_node::pki;
use kurzdraht_proto::v1::{self as pb, peer_exchange_client::PeerExchangeClient};
use kurzdraht_testkit::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tonic::transport::Endpoint;
use tonic::Code;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A TCP forwarder to `upstream` that counts the connections it accepts (mutual TLS runs
/// end to end through it).
async fn counting_link(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (addr, count)
}

/// `kurzdraht <args>`: exit code, stdout, stderr.
fn kd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_remove("KURZDRAHT_CLIENT")
        .output()
        .expect("run kurzdraht");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` (a directory) with `line` added to the entry of `agency`.
fn add_to_entry(text: &str, agency: &str, line: &str) -> String {
    let id = format!("id = \"{agency}\"");
    let blocks: Vec<String> = text
        .split("[[agency]]")
        .map(|b| {
            if b.contains(&id) {
                format!("{}\n{line}\n\n", b.trim_end())
            } else {
                b.to_string()
            }
        })
        .collect();
    let out = blocks.join("[[agency]]");
    assert!(out.contains(line), "no entry of {agency}");
    out
}

fn refusals(h: &Harness, agency: &str, reason: &str) -> u64 {
    let text = kurzdraht_node::metrics::render_node(h.node(agency));
    let key = format!("kurzdraht_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_neither_delivers_nor_receives_and_a_renewed_one_does() {
    let mut h = start().await;
    let fed = h.fed.dir.clone();
    let jc_dir = fed.join(JC);
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let consent = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let request = || certification_request(&lena, "Antrag auf Zusicherung");
    // Before: both directions deliver (and leave their connections open).
    let id = submit_ok(&mut jc, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    let back = submit_ok(&mut ja, JC, &consent, move_out_certification(&lena)).await;
    wait_for_state(&ja, &back, pb::DeliveryState::Delivered).await;

    // A connection with the Jobcenter's certificate to the Jugendamt, open before the
    // revocation: its call is admitted (an empty envelope is refused for what it is, not
    // for who sends it).
    let jc_cfg = h.fed.config(JC).unwrap();
    let (via, connections) = counting_link(h.fed.config(JA).unwrap().peer_addr).await;
    let channel = Endpoint::from_shared(format!("https://{via}"))
        .unwrap()
        .tls_config(kurzdraht_node::tls::peer_client_tls(&jc_cfg.tls, JA))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut open = PeerExchangeClient::new(channel);
    let empty = || pb::SignedEnvelope {
        signer: JC.into(),
        ..Default::default()
    };
    let before = open.deliver(empty()).await;
    let s = before.expect_err("an empty envelope");
    assert_ne!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // The operator: the fingerprint of the old certificate, revoked in a new version.
    let (code, out, err) = kd(&[
        "pki",
        "fingerprint",
        "--cert",
        jc_dir.join("tls.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap_or_else(|| panic!("no fingerprint printed: {out}"))
        .to_string();
    {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        use sha2::Digest;
        let der = CertificateDer::from_pem_slice(read(&jc_dir.join("tls.pem")).as_bytes()).unwrap();
        assert_eq!(fingerprint, hex_of(&sha2::Sha256::digest(&der)));
    }
    let older_text = read(&fed.join("directory.toml"));
    let older_sig = read(&fed.join("directory.toml.sig"));
    let revoking = h
        .fed
        .update_directory(|text| {
            add_to_entry(
                text,
                JC,
                &format!(
                    "revoked_certificates = [{{ sha256 = \"{fingerprint}\", since = \"{}\" }}]",
                    today()
                ),
            )
        })
        .await
        .unwrap();
    for a in [JC, JA, JN] {
        assert_eq!(h.node(a).directory().version(), revoking.version());
    }

    // The open connection carries no call any more: refused on it, with the reason.
    let after = open.deliver(empty()).await;
    let s = expect_refusal(
        "a call on the open connection",
        after,
        Code::PermissionDenied,
        "certificate-revoked",
    );
    assert!(s.message().contains(&fingerprint), "{}", s.message());
    assert_eq!(connections.load(Ordering::SeqCst), 1, "the same connection");

    // The Jobcenter no longer delivers: the Jugendamt refuses its client certificate; the
    // message waits (transient), audited and counted at the Jugendamt.
    let held_jc = submit_ok(&mut jc, JA, &consent, request()).await;
    let st = wait_until("the Jobcenter's delivery refused", || {
        let jc = jc.clone();
        let id = held_jc.clone();
        async move {
            let s = status(&mut jc.clone(), &id).await;
            if s.attempts > 0 && s.detail.contains("certificate") && s.detail.contains("revoked") {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await;
    assert_eq!(state_name(st.state), "QUEUED", "{st:?}");
    let audited: Vec<_> = h
        .node(JA)
        .ledger()
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "inbox.refused" && e.detail == "certificate-revoked")
        .collect();
    assert!(!audited.is_empty());
    assert!(audited.iter().all(|e| e.peer == JC), "{audited:?}");

    // ... and no longer receives: the Jugendamt refuses its server certificate in the
    // handshake (the Jugendamt's connection to it was made anew under the newer directory).
    let refused_before = refusals(&h, JA, "certificate-revoked");
    let held_ja = submit_ok(&mut ja, JC, &consent, move_out_certification(&lena)).await;
    let st = wait_until("the Jugendamt's delivery to the Jobcenter refused", || {
        let ja = ja.clone();
        let id = held_ja.clone();
        async move {
            let s = status(&mut ja.clone(), &id).await;
            if s.attempts > 0 && s.detail.to_lowercase().contains("revoked") {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await;
    assert_eq!(state_name(st.state), "QUEUED", "{st:?}");
    assert!(
        st.detail.contains("invalid peer certificate: Revoked"),
        "{}",
        st.detail
    );
    assert!(refusals(&h, JA, "certificate-revoked") > refused_before);
    let inbox = read_inbox(&mut h.client(JC).await, 0).await;
    assert!(
        !ids(&inbox).contains(&held_ja),
        "received with a revoked certificate"
    );

    // The older directory cannot undo the revocation: refused while running ...
    let source = Source {
        file: fed.join("directory.toml"),
        operator_key: jc_cfg.operator_key,
        data_dir: h.data_dir(JA),
    };
    let newer_text = read(&fed.join("directory.toml"));
    let newer_sig = read(&fed.join("directory.toml.sig"));
    std::fs::write(fed.join("directory.toml"), &older_text).unwrap();
    std::fs::write(fed.join("directory.toml.sig"), &older_sig).unwrap();
    match directory_update::look(h.node(JA), &source) {
        Outcome::Refused(why) => assert!(why.contains("is not newer"), "{why}"),
        other => panic!("the older directory was not refused: {other:?}"),
    }
    assert_eq!(h.node(JA).directory().version(), revoking.version());
    // ... and at start.
    let older = Directory::from_toml(&older_text).unwrap();
    match directory_update::check_not_older(&h.data_dir(JA), &older) {
        Err(kurzdraht_node::NodeError::Config { key, reason }) => {
            assert_eq!(key, "directory.file");
            assert!(reason.contains("older"), "{reason}");
        }
        other => panic!("the older directory was not refused at start: {other:?}"),
    }
    std::fs::write(fed.join("directory.toml"), &newer_text).unwrap();
    std::fs::write(fed.join("directory.toml.sig"), &newer_sig).unwrap();
    let still = open.deliver(empty()).await;
    expect_refusal(
        "still revoked",
        still,
        Code::PermissionDenied,
        "certificate-revoked",
    );

    // `directory verify` shows the revocation.
    let node_toml = jc_dir.join("node.toml");
    let (code, out, err) = kd(&[
        "directory",
        "verify",
        "--config",
        node_toml.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "revoked    TLS certificate sha256 {fingerprint} since {}",
            today()
        )),
        "{out}"
    );

    // `config check` refuses the Jobcenter's node: exit 4, naming tls.pem.
    let (code, out, err) = kd(&["config", "check", node_toml.to_str().unwrap()]);
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(err.contains("tls.pem") && err.contains("revoked"), "{err}");

    // The positive control: a renewed certificate of the same agency (new key, signed by the
    // CA), installed, the node restarted. The held messages go, both ways.
    let (csr, key) = pki::tls_request(JC, "Jobcenter Kreis Segeberg").unwrap();
    pki::write_file(&jc_dir.join("tls-renewed.key"), &key, true).unwrap();
    let ca_key = kurzdraht_node::config::read_secret("ca.key", &fed.join("ca.key")).unwrap();
    let cert = pki::sign_request(&read(&fed.join("ca.pem")), &ca_key, &csr, JC, 365).unwrap();
    pki::write_file(&jc_dir.join("tls-renewed.pem"), &cert, false).unwrap();
    h.reconfigure(
        JC,
        &[
            ("cert = \"tls.pem\"", "cert = \"tls-renewed.pem\""),
            ("key = \"tls.key\"", "key = \"tls-renewed.key\""),
        ],
    )
    .await;
    let (code, out, err) = kd(&["config", "check", node_toml.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let jc = h.client(JC).await;
    h.node(JA).wake_all();
    wait_for_state(&jc, &held_jc, pb::DeliveryState::Delivered).await;
    wait_for_state(&ja, &held_ja, pb::DeliveryState::Delivered).await;
    let id = submit_ok(&mut h.client(JC).await, JA, &consent, request()).await;
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
