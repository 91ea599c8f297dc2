//! The CLI's `--json` output follows the canonical protobuf JSON mapping, as the protobuf
//! project's own implementation (Python's google.protobuf.json_format) reads and prints it:
//! every client command's answer, against real nodes, is handed to
//! `tests/python/json_mapping_test.py`, which parses it strictly into the message type and
//! demands the same JSON back; and each `…Ms` time has an RFC 3339 sibling naming the same
//! millisecond.
//!
//! Needs python3 with grpcio-tools (installed with pip when missing, as python_client.rs).

use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `kurzdraht ARGS --json --client CLIENT`; demands exit 0; returns what it printed.
fn cli(client: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .arg("--json")
        .arg("--client")
        .arg(client)
        .env_remove("KURZDRAHT_CLIENT")
        .output()
        .expect("run kurzdraht");
    assert!(
        out.status.success(),
        "kurzdraht {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("no JSON ({e}): {text}"))
}

/// The cases for the Python oracle: what, message type, the JSON printed.
#[derive(Default)]
struct Cases(Vec<Value>);

impl Cases {
    fn add(&mut self, what: &str, message: &str, printed: &Value) {
        self.0.push(serde_json::json!({
            "what": what,
            "type": format!("kurzdraht.v1.{message}"),
            "json": printed,
        }));
    }
}

use kurzdraht_testkit::LENA_CLI as LENA;

/// Polls `probe` every 50 ms for at most 20 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn every_client_command(jc: PathBuf, ja: PathBuf, dir: PathBuf) -> Cases {
    let mut cases = Cases::default();
    let form = dir.join("einwilligung.pdf");
    std::fs::write(&form, b"Einwilligung, unterschrieben").expect("form");
    // valid to the end of a day 60 days ahead, in Germany
    let last_day = (kurzdraht_node::clock::german_date_of_ms(kurzdraht_node::clock::now_ms())
        .expect("today")
        + time::Duration::days(60))
    .to_string();
    let mut grant = vec!["consent", "grant", "--valid-until", &last_day];
    grant.extend(kurzdraht_testkit::lena_written_consent_cli(
        JA,
        form.to_str().expect("a UTF-8 path"),
    ));
    let granted = json(&cli(&jc, &grant));
    cases.add("consent grant", "RecordConsentResponse", &granted);
    let consent = &granted["consent"];
    let consent_id = consent["consentId"]
        .as_str()
        .expect("consentId")
        .to_string();
    // The mapping, as a script sees it: enum names, base64 bytes, int64 as strings, and the
    // RFC 3339 sibling of each time.
    assert_eq!(consent["form"], "WRITTEN", "{granted}");
    assert_eq!(consent["purposes"], serde_json::json!(["U25_MOVE_OUT"]));
    let sha = consent["evidenceSha256"].as_str().expect("base64");
    assert_eq!(sha.len(), 44, "32 bytes in base64: {sha}");
    let recorded_ms = consent["recordedAtMs"].as_str().expect("int64 as a string");
    assert!(recorded_ms.parse::<i64>().is_ok_and(|ms| ms > 0));
    assert!(
        consent["recordedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{granted}"
    );
    assert!(granted["idempotencyKey"].is_string());
    let until: i64 = consent["validUntilMs"]
        .as_str()
        .and_then(|ms| ms.parse().ok())
        .expect("validUntilMs");
    let german = |ms: i64| kurzdraht_node::clock::german_date_of_ms(ms).expect("a date");
    assert_eq!(german(until).to_string(), last_day, "to the last day's end");
    assert_eq!(
        german(until + 1),
        german(until).next_day().expect("a day"),
        "and not a millisecond longer"
    );

    let mut send = vec![
        "send",
        "certification-request",
        "--to",
        JA,
        "--consent",
        &consent_id,
        "--reason",
        "Antrag auf Zusicherung",
        "--caseworker",
        "Herr Jensen",
    ];
    send.extend(LENA);
    let sent = json(&cli(&jc, &send));
    cases.add("send", "SubmitResponse", &sent);
    let message_id = sent["messageId"].as_str().expect("messageId").to_string();

    let status = eventually("the request is delivered", || {
        let s = json(&cli(&jc, &["status", &message_id]));
        (s["state"] == "DELIVERED").then_some(s)
    });
    assert!(status["receipt"]["receipt"].is_string(), "{status}");
    cases.add(
        "status (delivered, with its receipt)",
        "MessageStatus",
        &status,
    );

    let inbox = eventually(
        "the notice and the request in the Jugendamt's inbox",
        || {
            let lines: Vec<Value> = cli(&ja, &["inbox"]).lines().map(json).collect();
            (lines.len() == 2).then_some(lines)
        },
    );
    assert_eq!(inbox[0]["kind"], "CONSENT_NOTICE");
    assert_eq!(inbox[1]["kind"], "CERTIFICATION_REQUEST");
    assert_eq!(inbox[1]["seq"], "2", "uint64 as a string");
    assert_eq!(inbox[1]["acknowledged"], false, "defaults are printed");
    for (i, item) in inbox.iter().enumerate() {
        cases.add(&format!("inbox line {i}"), "InboxItem", item);
    }
    let acked = json(&cli(&ja, &["ack", &message_id]));
    cases.add("ack", "AcknowledgeResponse", &acked);

    let evidence = json(&cli(
        &jc,
        &["consent", "evidence", "--message", &message_id],
    ));
    cases.add("consent evidence", "ConsentEvidence", &evidence);
    let list = json(&cli(&jc, &["consent", "list"]));
    cases.add("consent list", "ListConsentsResponse", &list);
    let mut report = vec!["subject", "report"];
    report.extend(LENA);
    let report = json(&cli(&jc, &report));
    cases.add("subject report", "SubjectAccessReport", &report);
    let closed = json(&cli(&jc, &["consent", "close", &consent_id]));
    cases.add("consent close", "CloseCaseResponse", &closed);
    let withdrawn = json(&cli(
        &jc,
        &[
            "consent",
            "withdraw",
            &consent_id,
            "--recorded-by",
            "Herr Jensen",
        ],
    ));
    cases.add("consent withdraw", "WithdrawConsentResponse", &withdrawn);
    let mut erase = vec!["subject", "erase"];
    erase.extend(LENA);
    let erased = json(&cli(&jc, &erase));
    cases.add("subject erase", "EraseSubjectResponse", &erased);

    // The export writes the lines `inbox --json` prints: the withdrawal notice too.
    let export = dir.join("inbox.jsonl");
    let lines = eventually("the withdrawal in the Jugendamt's inbox", || {
        cli(&ja, &["inbox", "--export", export.to_str().expect("UTF-8")]);
        let text = std::fs::read_to_string(&export).expect("the export");
        let lines: Vec<Value> = text.lines().map(json).collect();
        (lines.len() == 3).then_some(lines)
    });
    assert_eq!(lines[2]["kind"], "CONSENT_WITHDRAWAL");
    assert_eq!(lines[1]["acknowledged"], true);
    for (i, item) in lines.iter().enumerate() {
        cases.add(&format!("inbox export line {i}"), "InboxItem", item);
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_commands_json_is_the_canonical_protobuf_mapping() {
    require_python_grpc();
    let h = start().await;
    let client = |id: &str| {
        h.fed
            .agencies
            .iter()
            .find(|a| a.id == id)
            .expect("the agency's files")
            .client_config
            .clone()
    };
    let (jc, ja, dir) = (client(JC), client(JA), h.dir.path().to_path_buf());
    let cases = tokio::task::spawn_blocking(move || every_client_command(jc, ja, dir))
        .await
        .expect("the commands");
    let n = cases.0.len();
    let file = h.dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases.0).expect("JSON")).expect("cases");
    let stdout = tokio::task::spawn_blocking(move || {
        run_python_script(
            "json_mapping_test.py",
            &["--cases".as_ref(), file.as_os_str()],
            Duration::from_secs(120),
        )
    })
    .await
    .expect("the oracle");
    assert_eq!(printed(&stdout, "checked"), n.to_string(), "{stdout}");
    let times: usize = printed(&stdout, "times").parse().expect("a count");
    assert!(times >= 3 * n / 2, "only {times} timestamps in {n} cases");
    // the type names above are the contract's
    let _ = (
        pb::MessageStatus::default(),
        pb::EraseSubjectResponse::default(),
    );
}
