//! `kurzdraht-bench footprint` as a user runs it, on a tiny store: the real binary fills a
//! Jugendamt's store, runs it and its peer as `serve` processes and prints the tables. Only
//! checks that it completes and prints the summary with figures and the verdict — no
//! assertions on the memory figures themselves.

use std::process::Command;

/// The value of the summary row starting with `label`.
fn row<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label).map(str::trim))
}

#[test]
fn bench_footprint_runs_on_a_tiny_store_and_prints_the_verdict() {
    let out = Command::new(env!("CARGO_BIN_EXE_kurzdraht-bench"))
        .args([
            "footprint",
            "--consents",
            "200",
            "--messages",
            "200",
            "--seconds",
            "1",
            "--idle-seconds",
            "0",
            "--callers",
            "2",
        ])
        .output()
        .expect("run kurzdraht-bench footprint");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench footprint failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        row(&stdout, "records"),
        Some("200 consents + 200 messages"),
        "{stdout}"
    );
    for label in [
        "store size on disk",
        "fill time",
        "node RSS after open (first answer / after idle)",
        "node peak RSS: start-up / under load",
    ] {
        let value = row(&stdout, label);
        assert!(
            value.is_some_and(|v| v.chars().any(|c| c.is_ascii_digit())),
            "no figure for {label:?} in:\n{stdout}"
        );
    }
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("verdict: "))
        .unwrap_or_else(|| panic!("no verdict line in:\n{stdout}"));
    assert!(
        verdict.ends_with("— met") || verdict.ends_with("— NOT met"),
        "{verdict}"
    );
    assert!(
        stdout.contains("submitted messages DELIVERED to the Jobcenter"),
        "{stdout}"
    );
}
