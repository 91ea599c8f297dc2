//! `kurzdraht-bench console` as a user runs it, on a tiny store: the real binary fills a
//! Jugendamt's store, serves its console as a `kurzdraht serve` process, signs in and prints
//! a row per page. Only checks that every page has its row with figures and a verdict — no
//! assertions on the latencies themselves.

use std::process::Command;

const PAGES: [&str; 11] = [
    "/anmelden",
    "/posteingang",
    "/posteingang?art=entscheidung",
    "/posteingang?vor=",
    "/posteingang/neu?nach=",
    "/nachricht/<id>",
    "/konto",
    "/auskunft (form)",
    "/auskunft?vorname=",
    "/protokoll",
    "/protokoll?bereich=console.",
];

#[test]
fn bench_console_runs_on_a_tiny_store_and_prints_a_row_per_page() {
    let out = Command::new(env!("CARGO_BIN_EXE_kurzdraht-bench"))
        .args([
            "console",
            "--consents",
            "200",
            "--messages",
            "200",
            "--requests",
            "5",
            "--warmup",
            "1",
        ])
        .output()
        .expect("run kurzdraht-bench console");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench console failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("records:    200 consents + 200 messages (180 received in the inbox, 20 sent in the outbox)"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| /")).collect();
    assert_eq!(rows.len(), PAGES.len(), "{stdout}");
    for (row, page) in rows.iter().zip(PAGES) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // "", page, n, p50, p90, p99, max, body, verdict, ""
        assert_eq!(cells.len(), 10, "{row}");
        assert!(cells[1].starts_with(page), "{row} is not {page}");
        assert_eq!(cells[2], "5", "{row}");
        for figure in &cells[3..7] {
            assert!(figure.parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row}");
        }
        assert!(matches!(cells[8], "PASS" | "FAIL"), "{row}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("verdict: ")),
        "{stdout}"
    );
}
