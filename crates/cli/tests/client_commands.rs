//! The client commands against real `kurzdraht serve` processes: distinct exit codes for
//! refused, invalid, unreachable and unauthenticated, an inbox export with progress, and
//! commands repeated with their idempotency keys.

use kurzdraht_testkit::ServeProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kurzdraht");

fn run(args: &[&str], client: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--client")
        .arg(client)
        .output()
        .expect("run kurzdraht")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn with_client_file(
    dir: &Path,
    name: &str,
    client: &Path,
    f: impl Fn(String) -> String,
) -> PathBuf {
    let text = std::fs::read_to_string(client).expect("client.toml");
    let path = client.parent().expect("agency dir").join(name);
    std::fs::write(&path, f(text)).expect("write client file");
    let _ = dir;
    path
}

#[test]
fn exit_codes_and_export() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fed = dir.path().join("fed");
    let init = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(&fed)
        .output()
        .expect("pki init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut nodes = vec![];
    for agency in ["jobcenter-segeberg", "jugendamt-kreis-segeberg"] {
        let log = dir.path().join(format!("{agency}.log"));
        let config = fed.join(agency).join("node.toml");
        nodes.push(ServeProcess::spawn(agency, &config, log).expect("serve"));
    }
    let jc = fed.join("jobcenter-segeberg/client.toml");
    let ja = fed.join("jugendamt-kreis-segeberg/client.toml");
    let started = Instant::now();
    while code(&run(&["consent", "list"], &jc)) != 0 || code(&run(&["consent", "list"], &ja)) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nodes did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A consent, recorded by the CLI.
    let form = dir.path().join("einwilligung.pdf");
    std::fs::write(&form, b"signed consent form").unwrap();
    let mut grant = vec!["consent", "grant", "--json"];
    grant.extend(kurzdraht_testkit::lena_written_consent_cli(
        "jugendamt-kreis-segeberg",
        form.to_str().unwrap(),
    ));
    let out = run(&grant, &jc);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let consent = v["consent"]["consentId"]
        .as_str()
        .expect("consent id")
        .to_string();

    let send = |consent: &str, dob: &str, client: &Path| {
        let args = vec![
            "send",
            "certification-request",
            "--to",
            "jugendamt-kreis-segeberg",
            "--consent",
            consent,
            "--given-name",
            "Lena",
            "--family-name",
            "Hansen",
            "--date-of-birth",
            dob,
            "--reason",
            "Konflikt",
            "--caseworker",
            "Herr Jensen",
        ];
        run(&args, client)
    };
    // accepted
    let ok = send(&consent, "2005-04-12", &jc);
    assert_eq!(code(&ok), 0, "{}", String::from_utf8_lossy(&ok.stderr));
    // refused: no such consent
    let unknown = kurzdraht_envelope::ids::new_id();
    let refused = send(&unknown, "2005-04-12", &jc);
    assert_eq!(
        code(&refused),
        3,
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no-consent"));
    // invalid: a date that does not exist
    let invalid = send(&consent, "31.02.2005", &jc);
    assert_eq!(
        code(&invalid),
        4,
        "{}",
        String::from_utf8_lossy(&invalid.stderr)
    );
    // not authenticated: a wrong token
    let token = fed.join("jobcenter-segeberg/wrong-token");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&token, "0".repeat(64)).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let wrong = with_client_file(dir.path(), "wrong.toml", &jc, |t| {
        t.replace("token_file = \"api-token\"", "token_file = \"wrong-token\"")
    });
    let unauth = run(&["consent", "list"], &wrong);
    assert_eq!(
        code(&unauth),
        6,
        "{}",
        String::from_utf8_lossy(&unauth.stderr)
    );
    // unreachable: nothing listens there
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = with_client_file(dir.path(), "gone.toml", &jc, |t| {
        let start = t.find("endpoint = ").unwrap();
        let end = start + t[start..].find('\n').unwrap();
        format!("{}endpoint = \"https://{free}\"{}", &t[..start], &t[end..])
    });
    let unreachable = run(&["consent", "list"], &gone);
    assert_eq!(
        code(&unreachable),
        5,
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    // usage
    let usage = Command::new(BIN).args(["send"]).output().unwrap();
    assert_eq!(code(&usage), 2);

    // Export: 300 more requests, then the Jugendamt's inbox to a file, with progress.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = kurzdraht_client::ClientConfig::load(&jc).unwrap();
        let mut client = kurzdraht_client::connect(&cfg).await.unwrap();
        for i in 0..300 {
            let body = kurzdraht_proto::v1::CertificationRequest {
                subject: Some(kurzdraht_proto::v1::Subject {
                    given_name: "Lena".into(),
                    family_name: "Hansen".into(),
                    date_of_birth: "2005-04-12".into(),
                    ..Default::default()
                }),
                reason: format!("Nachfrage {i}"),
                respond_by: String::new(),
                caseworker: "Herr Jensen".into(),
            };
            client
                .submit(kurzdraht_proto::v1::SubmitRequest {
                    recipient: "jugendamt-kreis-segeberg".into(),
                    consent_id: consent.clone(),
                    in_reply_to: String::new(),
                    body: Some(kurzdraht_proto::v1::MessageBody {
                        body: Some(
                            kurzdraht_proto::v1::message_body::Body::CertificationRequest(body),
                        ),
                    }),
                    idempotency_key: String::new(),
                })
                .await
                .unwrap();
        }
    });
    let file = dir.path().join("inbox.jsonl");
    let started = Instant::now();
    let lines = loop {
        let out = run(&["inbox", "--export", file.to_str().unwrap()], &ja);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&file).unwrap();
        let n = text.lines().count();
        // the consent notice, the first request and the 300
        if n == 302 {
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                stderr.contains("exported 250 messages"),
                "no progress line: {stderr}"
            );
            assert!(stderr.contains("exported 302 messages to"), "{stderr}");
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {n} delivered"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(v["messageId"].as_str().is_some_and(|id| id.len() == 36));
    }
    assert!(!file.with_extension("partial").exists());

    // Idempotency keys: a command repeated with the key it printed changes nothing.
    let json = |out: &Output| -> serde_json::Value {
        assert_eq!(code(out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let mut keyed_grant = grant.clone();
    keyed_grant.extend(["--idempotency-key", "grant-2"]);
    let g1 = json(&run(&keyed_grant, &jc));
    let g2 = json(&run(&keyed_grant, &jc));
    assert_eq!(g1["idempotencyKey"], "grant-2");
    assert_eq!(g1, g2, "the same answer: one consent");
    let second = g1["consent"]["consentId"].as_str().expect("id").to_string();
    assert_ne!(second, consent);
    let send_keyed = |reason: &str, key: Option<&str>| {
        let mut args = vec![
            "send",
            "certification-request",
            "--json",
            "--to",
            "jugendamt-kreis-segeberg",
            "--consent",
            &second,
            "--given-name",
            "Lena",
            "--family-name",
            "Hansen",
            "--date-of-birth",
            "2005-04-12",
            "--reason",
            reason,
            "--caseworker",
            "Herr Jensen",
        ];
        if let Some(k) = key {
            args.extend(["--idempotency-key", k]);
        }
        run(&args, &jc)
    };
    let s1 = json(&send_keyed("Erneut", Some("send-1")));
    let s2 = json(&send_keyed("Erneut", Some("send-1")));
    assert_eq!(s1, s2, "the same message id");
    assert_eq!(s1["idempotencyKey"], "send-1");
    // The key with another request: refused (exit 3), naming the reason.
    let other = send_keyed("Anders", Some("send-1"));
    assert_eq!(
        code(&other),
        3,
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(String::from_utf8_lossy(&other.stderr).contains("idempotency-key-reused"));
    // Without --idempotency-key each invocation has a fresh key (printed): two messages.
    let f1 = json(&send_keyed("Erneut", None));
    let f2 = json(&send_keyed("Erneut", None));
    assert_ne!(f1["messageId"], f2["messageId"]);
    assert_ne!(f1["idempotencyKey"], f2["idempotencyKey"]);
    assert_eq!(f1["idempotencyKey"].as_str().map(str::len), Some(36));
    // Text output names the key too.
    let text = run(
        &[
            "consent",
            "withdraw",
            &second,
            "--recorded-by",
            "Herr Jensen",
            "--idempotency-key",
            "withdraw-2",
        ],
        &jc,
    );
    assert_eq!(code(&text), 0, "{}", String::from_utf8_lossy(&text.stderr));
    assert!(String::from_utf8_lossy(&text.stdout).contains("idempotency key withdraw-2"));
    // Repeated with its key: answered again; without it: refused as withdrawn.
    let again = run(
        &[
            "consent",
            "withdraw",
            &second,
            "--recorded-by",
            "Herr Jensen",
            "--idempotency-key",
            "withdraw-2",
        ],
        &jc,
    );
    assert_eq!(
        code(&again),
        0,
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let unkeyed = run(
        &[
            "consent",
            "withdraw",
            &second,
            "--recorded-by",
            "Herr Jensen",
        ],
        &jc,
    );
    assert_eq!(
        code(&unkeyed),
        3,
        "{}",
        String::from_utf8_lossy(&unkeyed.stderr)
    );
    // A key over its limit is refused as invalid input (exit 4), naming the field.
    let long = "k".repeat(129);
    let invalid = send_keyed("Erneut", Some(&long));
    assert_eq!(code(&invalid), 4);
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("idempotency_key"));
}
