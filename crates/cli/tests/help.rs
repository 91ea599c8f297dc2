//! The agencies' binary holds no benchmark: `kurzdraht --help` lists its commands and none
//! of them is a benchmark (those are `kurzdraht-bench`'s), and `kurzdraht bench` is no command.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kurzdraht");

#[test]
fn help_lists_the_agencies_commands_and_no_benchmark() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run kurzdraht --help");
    assert!(out.status.success(), "kurzdraht --help failed: {out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // positive control: the listing is read, and it holds what the agencies run
    for known in [
        "serve",
        "pki",
        "directory",
        "config",
        "demo",
        "send",
        "backup",
        "outbox",
    ] {
        assert!(
            commands.contains(&known),
            "no {known} in {commands:?}:\n{help}"
        );
    }
    assert!(
        !help.to_lowercase().contains("bench"),
        "kurzdraht --help mentions a benchmark:\n{help}"
    );
    let bench = Command::new(BIN)
        .arg("bench")
        .output()
        .expect("run kurzdraht bench");
    assert_eq!(
        bench.status.code(),
        Some(2),
        "kurzdraht bench is a usage error: {bench:?}"
    );
    assert!(
        String::from_utf8_lossy(&bench.stderr).contains("unrecognized subcommand"),
        "{bench:?}"
    );
}
