//! `kurzdraht-bench e2e` as a user runs it: the real benchmark binary and two real `kurzdraht
//! serve` processes. Only
//! checks that it completes and prints both rows with figures — no timing assertions.

use std::process::Command;

/// The msg/s figure of the first table row of `mode` (columns: mode conc messages seconds msg/s …).
fn rate_of(stdout: &str, mode: &str) -> Option<f64> {
    stdout.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() != Some(&mode) {
            return None;
        }
        // conc, messages, seconds, msg/s, p50, p99, p99.9
        let numbers: Vec<f64> = cols
            .get(1..8)?
            .iter()
            .map(|c| c.parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        (numbers[0] == 1.0 && numbers[1] >= 1.0).then_some(numbers[3])
    })
}

/// Runs `kurzdraht-bench e2e` with `args`; returns its stdout once it succeeded.
fn run_e2e(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kurzdraht-bench"))
        .arg("e2e")
        .args(args)
        .output()
        .expect("run kurzdraht-bench e2e");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench e2e failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bench_e2e_runs_and_prints_baseline_and_kurzdraht_rows() {
    let stdout = run_e2e(&["--seconds", "1", "--concurrency", "1"]);
    for mode in ["baseline", "kurzdraht"] {
        let rate = rate_of(&stdout, mode);
        assert!(
            rate.is_some_and(|r| r > 0.0),
            "no {mode} row with figures in:\n{stdout}"
        );
    }
    assert!(stdout.contains("as expected"), "{stdout}");
}

/// The same over a delaying link: both ends still exchange every message (the Jugendamt's
/// inbox count matches) and the latency of a bare call includes the link's round trip.
#[test]
fn bench_e2e_runs_over_a_delaying_link() {
    let stdout = run_e2e(&[
        "--seconds",
        "1",
        "--concurrency",
        "2",
        "--persons",
        "2",
        "--link-delay-ms",
        "20",
    ]);
    assert!(stdout.contains("20 ms one way"), "{stdout}");
    assert!(stdout.contains("as expected"), "{stdout}");
    // a bare call crosses the link twice: its p50 is at least 40 ms
    let p50 = stdout.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.first() == Some(&"baseline")).then(|| cols.get(5)?.parse::<f64>().ok())?
    });
    assert!(
        p50.is_some_and(|p| p >= 40.0),
        "baseline p50 {p50:?} in:\n{stdout}"
    );
}
