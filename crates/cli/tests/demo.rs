//! The README's main command, run as a user runs it: the real binary, three real nodes.

use std::process::Command;

#[test]
fn demo_plays_the_whole_story_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_kurzdraht"))
        .arg("demo")
        .output()
        .expect("run kurzdraht demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The steps are the numbered scene lines ("3. The Jobcenter asks …"): 1, 2, … N.
    let steps: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    let n = steps.len() as u32;
    assert!(n > 0, "no numbered steps in:\n{stdout}");
    assert_eq!(steps, (1..=n).collect::<Vec<_>>(), "steps out of order");
    assert!(
        stdout.contains(&format!("All {n} steps held.")),
        "expected \"All {n} steps held.\" in:\n{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");
    for refusal in [
        "no-consent",
        "consent-other-recipient",
        "consent-withdrawn",
        "over-age",
        "permission-denied",
    ] {
        assert!(stdout.contains(refusal), "missing {refusal} in:\n{stdout}");
    }
}

/// The nodes' logs of a whole demo run, at debug level, carry no personal data and no
/// secret: no name, date of birth or address of the story's people, no API token, no
/// signing, TLS or data key.
#[test]
fn logs_of_the_whole_story_hold_no_personal_data_or_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keep = dir.path().join("federation");
    let out = Command::new(env!("CARGO_BIN_EXE_kurzdraht"))
        .args(["demo", "--verbose", "--keep"])
        .arg(&keep)
        .env("KURZDRAHT_LOG", "debug")
        .output()
        .expect("run kurzdraht demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.lines().count() > 100,
        "expected debug logs, got:\n{logs}"
    );
    let personal = [
        "Lena",
        "Hansen",
        "Jonas",
        "Petersen",
        "Lorenzen",
        "2005-04-12",
        "2006-09-03",
        "2000-01-15",
        "Kurhausstra",
        "Ulzburger",
        "Hamburger Stra",
    ];
    // Control: these are the story's people, as the demo lists them from the very subjects
    // it sends (stdout, "The people of the story"), so their absence from the logs means
    // something; a renamed person turns this red.
    let cast: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("The people of the story"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !cast.is_empty(),
        "no list of the story's people in:\n{stdout}"
    );
    for needle in personal {
        assert!(
            cast.iter().any(|l| l.contains(needle)),
            "{needle:?} is not one of the story's people any more; update the needles:\n{}",
            cast.join("\n")
        );
    }
    let mut forbidden: Vec<String> = personal.iter().map(|s| s.to_string()).collect();
    for agency in [
        "jobcenter-segeberg",
        "jugendamt-kreis-segeberg",
        "jugendamt-norderstedt",
    ] {
        for secret in ["api-token", "signing.key", "data.key"] {
            let text =
                std::fs::read_to_string(keep.join(agency).join(secret)).expect("secret file");
            forbidden.push(text.trim().to_string());
        }
        let tls_key = std::fs::read_to_string(keep.join(agency).join("tls.key")).expect("tls key");
        let body: String = tls_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        forbidden.push(body[..40].to_string());
    }
    for needle in &forbidden {
        assert!(
            !logs.contains(needle.as_str()),
            "the logs contain {needle:?}"
        );
    }
}

/// `demo --console`: after the story the three nodes keep running; the printed console
/// addresses and logins work (a caseworker of the Kreis Jugendamt signs in over HTTPS,
/// checked against the federation's CA, and sees the story's request in the Posteingang);
/// SIGTERM stops the nodes and the demo ends with every step held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_console_keeps_the_nodes_and_prints_working_logins() {
    use kurzdraht_testkit::console_client::ConsoleClient;
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let keep = dir.path().join("federation");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kurzdraht"))
        .args(["demo", "--console", "--keep"])
        .arg(&keep)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kurzdraht demo --console");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let password = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no password line in:\n{}", printed.join("\n")));
        printed.push(line.clone());
        if let Some(p) = line.trim().strip_prefix("password for every demo login: ") {
            break p.to_string();
        }
    };
    let ja_line = printed
        .iter()
        .find(|l| l.trim_start().starts_with("jugendamt-kreis-segeberg") && l.contains("https://"))
        .unwrap_or_else(|| {
            panic!(
                "no console line for the Kreis Jugendamt:\n{}",
                printed.join("\n")
            )
        });
    assert!(
        ja_line.contains("logins: schmidt, datenschutz"),
        "{ja_line}"
    );
    let url = ja_line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .expect("url");
    let addr = url.trim_start_matches("https://").parse().expect("address");
    let ca = std::fs::read_to_string(keep.join("ca.pem")).expect("the federation's CA");
    let mut c = ConsoleClient::new(addr, "jugendamt-kreis-segeberg", &ca);
    let wrong = c.sign_in("schmidt", "not-the-demo-password").await;
    assert_eq!(
        wrong.status, 401,
        "positive control: a wrong password is refused"
    );
    let signed_in = c.sign_in("schmidt", &password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let inbox = c.get("/posteingang").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox
        .body
        .contains("Angemeldet: Frau Schmidt (Sachbearbeitung)"));
    assert!(
        inbox
            .body
            .contains("Anfrage zur Bescheinigung (Auszug U25)"),
        "{}",
        inbox.body
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("demo exits");
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        exit.success(),
        "demo --console exit {exit:?}:\n{}",
        rest.join("\n")
    );
    assert!(
        rest.iter()
            .any(|l| l.starts_with("All ") && l.ends_with(" steps held.")),
        "{}",
        rest.join("\n")
    );
}
