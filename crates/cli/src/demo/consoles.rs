//! `kurzdraht demo --console`: after the story, the three nodes keep running with demo
//! accounts — a caseworker and a data protection officer per office, one password made for
//! this run — and their consoles' addresses and logins are printed, so a person can click
//! through what the story did. Ends with Ctrl-C (or SIGTERM).

use anyhow::Context;
use kurzdraht_ledger::AccountRole;
use kurzdraht_testkit::LocalFederation;

/// The demo's accounts per office: (agency, name, display name, role).
const ACCOUNTS: [(&str, &str, &str, AccountRole); 6] = [
    (
        "jobcenter-segeberg",
        "jensen",
        "Herr Jensen",
        AccountRole::Caseworker,
    ),
    (
        "jobcenter-segeberg",
        "datenschutz",
        "Datenschutz Jobcenter",
        AccountRole::DataProtection,
    ),
    (
        "jugendamt-kreis-segeberg",
        "schmidt",
        "Frau Schmidt",
        AccountRole::Caseworker,
    ),
    (
        "jugendamt-kreis-segeberg",
        "datenschutz",
        "Datenschutz Jugendamt Kreis",
        AccountRole::DataProtection,
    ),
    (
        "jugendamt-norderstedt",
        "petersen",
        "Frau Petersen",
        AccountRole::Caseworker,
    ),
    (
        "jugendamt-norderstedt",
        "datenschutz",
        "Datenschutz Jugendamt Norderstedt",
        AccountRole::DataProtection,
    ),
];

/// A password for this run only (16 random hex digits after a readable prefix).
fn demo_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!("demo-{}", hex::encode(bytes)))
}

/// Adds the accounts, prints the consoles and waits for Ctrl-C or SIGTERM.
pub async fn open(fed: &LocalFederation) -> anyhow::Result<()> {
    let password = demo_password()?;
    for (agency, name, display, role) in ACCOUNTS {
        let node = fed
            .node(agency)
            .with_context(|| format!("the node of {agency} is not running"))?;
        node.accounts()
            .add("demo", name, display, role, &password)
            .await
            .with_context(|| format!("adding the demo account {name} at {agency}"))?;
    }
    println!("\nThe three consoles (HTTPS; the certificate is the demo federation's own,");
    println!("so the browser warns once per address):");
    for agency in [
        "jobcenter-segeberg",
        "jugendamt-kreis-segeberg",
        "jugendamt-norderstedt",
    ] {
        let url = fed.console_url(agency)?;
        let names: Vec<&str> = ACCOUNTS
            .iter()
            .filter(|a| a.0 == agency)
            .map(|a| a.1)
            .collect();
        println!("   {agency:<26} {url}   logins: {}", names.join(", "));
    }
    println!("   password for every demo login: {password}");
    println!("\nThe nodes keep running; stop with Ctrl-C.");
    wait_for_stop().await;
    println!("\nStopping the nodes.");
    Ok(())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
