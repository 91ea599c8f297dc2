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
    assert!(stdout.contains("All 11 steps held."), "{stdout}");
    assert!(!stdout.contains('✗'), "{stdout}");
    for refusal in [
        "no-consent",
        "consent-other-recipient",
        "consent-withdrawn",
        "invalid-argument",
        "permission-denied",
    ] {
        assert!(stdout.contains(refusal), "missing {refusal} in:\n{stdout}");
    }
}
