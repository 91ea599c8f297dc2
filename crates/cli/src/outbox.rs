//! `kurzdraht outbox …`: what a stopped node still has to deliver, per peer, and holding it
//! longer while a peer is down (the operator's side of a long outage; see
//! deploy/HANDBOOK.md). Both work on the store offline: the running node holds its lock.

use crate::exit;
use anyhow::Context;
use clap::Subcommand;
use kurzdraht_node::clock;
use kurzdraht_node::config::NodeConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The longest an operator may hold messages in one step.
const MAX_DAYS: u32 = 365;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Per peer: queued messages, the oldest submission and when the first expires.
    List {
        /// The node's configuration (its store is read; the node must be stopped).
        #[arg(long)]
        config: PathBuf,
    },
    /// Hold the messages queued for PEER until DAYS days from now instead of letting them
    /// expire — each at most until the peer would refuse its envelope as too old (its
    /// creation + limits.replay_window_hours − limits.clock_skew_secs). Recorded in the
    /// audit chain. Run with the node stopped; start it again after.
    Extend {
        #[arg(long)]
        config: PathBuf,
        /// The peer's agency id.
        #[arg(long)]
        peer: String,
        /// Days from now (1 to 365).
        #[arg(long)]
        days: u32,
    },
}

pub async fn run(command: OutboxCommand) -> anyhow::Result<ExitCode> {
    match command {
        OutboxCommand::List { config } => list(&config),
        OutboxCommand::Extend { config, peer, days } => extend(&config, &peer, days).await,
    }
}

fn open(config: &Path) -> anyhow::Result<(NodeConfig, kurzdraht_ledger::Ledger)> {
    let c = NodeConfig::load(config)?;
    let ledger = kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &c.data_key)
        .with_context(|| format!("opening the store {}", c.data_dir.display()))?;
    Ok((c, ledger))
}

fn list(config: &Path) -> anyhow::Result<ExitCode> {
    let (_, ledger) = open(config)?;
    let queued = ledger.queued_by_peer()?;
    if queued.is_empty() {
        println!("nothing queued");
    }
    for (peer, q) in queued {
        println!(
            "{peer}: {} queued, oldest submitted {}, first expires {}",
            q.messages,
            clock::format_ms(q.oldest_submitted_ms),
            clock::format_ms(q.earliest_deadline_ms)
        );
    }
    Ok(exit::OK)
}

async fn extend(config: &Path, peer: &str, days: u32) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_DAYS).contains(&days) {
        anyhow::bail!("--days: {days} is not between 1 and {MAX_DAYS}");
    }
    let (c, ledger) = open(config)?;
    if peer == c.agency || c.directory.get(peer).is_none() {
        anyhow::bail!(
            "--peer: {peer} is not a peer of {} in the directory",
            c.agency
        );
    }
    let now = clock::now_ms();
    let until = now + i64::from(days) * 24 * 3600 * 1000;
    let window = (c.limits.replay_window.as_millis() as i64)
        .saturating_sub(c.limits.clock_skew.as_millis() as i64);
    let done = ledger.extend_deadlines(peer, until, |submitted| submitted + window, now)?;
    ledger.flush().await?;
    println!(
        "{peer}: {} queued messages now held until {}{}; {} already held as long",
        done.extended,
        clock::format_ms(until),
        match done.capped {
            0 => String::new(),
            n => format!(
                " ({n} of them only until the peer would refuse them as too old: raise \
                 limits.replay_window_hours on every node to hold them longer)"
            ),
        },
        done.unchanged
    );
    Ok(exit::OK)
}
