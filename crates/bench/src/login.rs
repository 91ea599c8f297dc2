//! `login`: the time of a console login (`Accounts::authenticate`, as the console calls it
//! in-process: Argon2id verification on a blocking thread, the audit entry, the flush) for
//! the right password, a wrong one, a disabled account and an unknown name — the last three
//! give one answer, and should take as long as each other, so that the time does not tell
//! whether an account exists.

use crate::common::{fmt_duration, percentile, print_machine, TempFederation};
use kurzdraht_ledger::AccountRole;
use kurzdraht_node::{config::NodeConfig, Node};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PASSWORD: &str = "korrekt-pferd-batterie-7";

pub(crate) async fn login(rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let fed = TempFederation::create(dir, "login")?;
    print_machine(fed.path());
    let config = NodeConfig::load(&fed.files_of("jobcenter-segeberg")?.node_config)?;
    let node = Node::open(&config)?;
    let accounts = node.accounts();
    for name in ["l.jensen", "k.petersen"] {
        accounts
            .add("bench", name, "Bench", AccountRole::Caseworker, PASSWORD)
            .await?;
    }
    accounts.disable("bench", "k.petersen").await?;
    let cases: [(&str, &str, &str, bool); 4] = [
        ("right password", "l.jensen", PASSWORD, true),
        ("wrong password", "l.jensen", "falsch-falsch-falsch", false),
        ("disabled account", "k.petersen", PASSWORD, false),
        ("unknown name", "lena.hansen", PASSWORD, false),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); cases.len()];
    // Interleaved, so drift on a shared machine falls on every case alike; a right password
    // after each wrong one keeps the account below its lock.
    for _ in 0..rounds {
        for (i, (what, name, password, succeeds)) in cases.iter().enumerate() {
            let started = Instant::now();
            let outcome = accounts.authenticate(name, password).await;
            times[i].push(started.elapsed());
            anyhow::ensure!(outcome.is_ok() == *succeeds, "{what}: {outcome:?}");
        }
    }
    println!("rounds:     {rounds} of each case, interleaved");
    println!();
    println!("| case | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for ((what, ..), t) in cases.iter().zip(times.iter_mut()) {
        t.sort();
        println!(
            "| {what} | {} | {} | {} | {} |",
            fmt_duration(percentile(t, 50.0)),
            fmt_duration(percentile(t, 90.0)),
            fmt_duration(percentile(t, 99.0)),
            fmt_duration(t.last().copied().unwrap_or_default()),
        );
    }
    Ok(ExitCode::SUCCESS)
}
