//! `commit`: submissions per second into the ledger, group commit versus fsync per submission.

use crate::common::*;
use anyhow::bail;
use kurzdraht_envelope::ids;
use kurzdraht_ledger::{DataKey, Durability, Ledger, LedgerError, Outgoing};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- bench commit

pub(crate) fn mode_name(mode: Durability) -> &'static str {
    match mode {
        Durability::GroupCommit => "group-commit",
        Durability::FsyncEach => "fsync-each",
    }
}

pub(crate) struct CommitRun {
    mode: Durability,
    writers: usize,
    elapsed: Duration,
    /// Latency of every completed submission (enqueue + flush), sorted.
    latencies: Vec<Duration>,
    flushes: u64,
    truncated: bool,
}

impl CommitRun {
    fn done(&self) -> usize {
        self.latencies.len()
    }
    fn rate(&self) -> f64 {
        self.done() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn mean(&self) -> Duration {
        let total: Duration = self.latencies.iter().sum();
        total / self.done().max(1) as u32
    }
}

/// An idempotency key for one benchmark submission, as the node makes one for a keyed
/// Submit (hashes of a fresh key and of the request, the message id as the answer).
pub(crate) fn keyed_request(out: &Outgoing) -> kurzdraht_ledger::KeyedRequest {
    use sha2::Digest;
    kurzdraht_ledger::KeyedRequest {
        key_id: sha2::Sha256::digest(out.message_id.as_bytes()).into(),
        answer: kurzdraht_ledger::AnsweredRequest {
            method: "Submit".into(),
            request_sha256: sha2::Sha256::digest(&out.envelope.payload).to_vec(),
            answered_at_ms: out.submitted_at_ms,
            message_ids: vec![out.message_id.clone()],
            consent_id: String::new(),
        },
    }
}

pub(crate) async fn commit_run(
    base: &Path,
    template: &Outgoing,
    mode: Durability,
    writers: usize,
    messages: usize,
    limit: Duration,
    keyed: bool,
) -> anyhow::Result<CommitRun> {
    let tmp = tempfile::Builder::new()
        .prefix("kurzdraht-bench-commit-")
        .tempdir_in(base)?;
    // Sealed at rest with a data key, as a node stores its outbox.
    let ledger = Ledger::open_with(
        tmp.path(),
        Some(&DataKey::generate()?),
        kurzdraht_ledger::StoreOptions {
            durability: mode,
            ..Default::default()
        },
    )?;
    let taken = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (ledger, taken, done) = (ledger.clone(), taken.clone(), done.clone());
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && taken.fetch_add(1, Ordering::Relaxed) < messages {
                let mut out = template.clone();
                out.message_id = ids::new_id();
                let key = keyed.then(|| keyed_request(&out));
                let t = Instant::now();
                ledger.enqueue_once(&out, key.as_ref())?;
                ledger.flush().await?;
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, LedgerError>(latencies)
        }));
    }
    let ticker = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "    … {} / {messages} after {:.0} s",
                    done.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut latencies = Vec::with_capacity(messages);
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(anyhow::Error::from(e)),
            Err(e) => failure = Some(anyhow::anyhow!("writer task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    if let Some(e) = failure {
        return Err(e.context(format!("{} with {writers} writers", mode_name(mode))));
    }
    let flushes = ledger.flush_count();
    drop(ledger);
    drop(tmp);
    latencies.sort_unstable();
    Ok(CommitRun {
        mode,
        writers,
        truncated: latencies.len() < messages,
        elapsed,
        latencies,
        flushes,
    })
}

pub(crate) async fn commit(
    writers: usize,
    messages: usize,
    rounds: usize,
    limit: Duration,
    dir: Option<PathBuf>,
    keyed: bool,
) -> anyhow::Result<ExitCode> {
    if writers == 0 || messages == 0 || rounds == 0 || limit.is_zero() {
        bail!("--writers, --messages, --rounds and --max-seconds must be above 0");
    }
    let base = base_dir(dir)?;
    let template = commit_template()?;
    print_parameters(&base, &template, writers, messages, rounds, limit, keyed);
    let mut plan = vec![(1, Durability::GroupCommit), (1, Durability::FsyncEach)];
    if writers != 1 {
        plan.push((writers, Durability::GroupCommit));
        plan.push((writers, Durability::FsyncEach));
    }
    let all = run_rounds(&base, &template, &plan, messages, rounds, limit, keyed).await?;
    let (runs, ranges) = medians(all);
    print_table(&runs, &ranges, rounds);
    print_comparison(&runs, writers);
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    Ok(ExitCode::SUCCESS)
}

/// Prints what is measured and how.
fn print_parameters(
    base: &Path,
    template: &Outgoing,
    writers: usize,
    messages: usize,
    rounds: usize,
    limit: Duration,
    keyed: bool,
) {
    println!("kurzdraht-bench commit — ledger submissions: enqueue + flush per message");
    print_machine(base);
    println!(
        "parameters: {messages} submissions per run, writers 1 and {writers}, {rounds} round(s), at most {} s per run",
        limit.as_secs()
    );
    println!(
        "envelope:   a real sealed CertificationRequest, {} B (payload {} B), fresh message id per submission",
        envelope_bytes(template),
        template.envelope.payload.len()
    );
    println!(
        "            (sealing is not timed: this measures the store, one transaction + flush each)"
    );
    println!(
        "flushes:    Ledger::flush_count(): each is one sled flush (pwrite + sync_file_range)"
    );
    println!("            followed by an fsync of the store file, as Ledger::flush does");
    println!(
        "keys:       {}",
        if keyed {
            "each submission with an idempotency key (answer stored in its transaction)"
        } else {
            "none (--idempotency-keys stores each submission's answer with it)"
        }
    );
}

/// Runs every configuration of `plan` once per round, alternating within a round; returns
/// each configuration's runs.
async fn run_rounds(
    base: &Path,
    template: &Outgoing,
    plan: &[(usize, Durability)],
    messages: usize,
    rounds: usize,
    limit: Duration,
    keyed: bool,
) -> anyhow::Result<Vec<Vec<CommitRun>>> {
    // rounds[config] holds that configuration's runs; configurations alternate within a round
    let mut all: Vec<Vec<CommitRun>> = plan.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, (w, mode)) in plan.iter().enumerate() {
            eprintln!(
                "round {round}/{rounds}, run {}/{}: {}, {w} writer(s), {messages} submissions …",
                i + 1,
                plan.len(),
                mode_name(*mode)
            );
            let run = commit_run(base, template, *mode, *w, messages, limit, keyed).await?;
            eprintln!(
                "    done: {} in {:.2} s ({:.0} msg/s)",
                run.done(),
                run.elapsed.as_secs_f64(),
                run.rate()
            );
            all[i].push(run);
        }
    }
    Ok(all)
}

/// Each configuration's median run by msg/s, and its range (slowest–fastest) as text.
fn medians(all: Vec<Vec<CommitRun>>) -> (Vec<CommitRun>, Vec<String>) {
    let mut runs = Vec::new();
    let mut ranges = Vec::new();
    for mut config in all {
        config.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let lo = config.first().map_or(0.0, CommitRun::rate);
        let hi = config.last().map_or(0.0, CommitRun::rate);
        ranges.push(format!("{lo:.0}–{hi:.0}"));
        let median = config.swap_remove(config.len() / 2);
        runs.push(median);
    }
    (runs, ranges)
}

/// The table: one row per configuration.
fn print_table(runs: &[CommitRun], ranges: &[String], rounds: usize) {
    println!();
    println!(
        "{:<13} {:>7} {:>9} {:>8} {:>9} {:>13} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "durability",
        "writers",
        "messages",
        "seconds",
        "msg/s",
        "msg/s range",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "flushes",
        "msg/flush"
    );
    for (r, range) in runs.iter().zip(ranges) {
        println!(
            "{:<13} {:>7} {:>9} {:>8.2} {:>9.0} {:>13} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9.1}{}",
            mode_name(r.mode),
            r.writers,
            r.done(),
            r.elapsed.as_secs_f64(),
            r.rate(),
            range,
            ms(r.mean()),
            ms(percentile(&r.latencies, 50.0)),
            ms(percentile(&r.latencies, 99.0)),
            r.flushes,
            r.done() as f64 / r.flushes.max(1) as f64,
            if r.truncated { "  (time limit)" } else { "" }
        );
    }
    if rounds > 1 {
        println!(
            "(each row: the median of {rounds} rounds by msg/s; range = slowest–fastest round)"
        );
    }
}

/// Group commit versus fsync-each, with one writer and with `writers`.
fn print_comparison(runs: &[CommitRun], writers: usize) {
    println!();
    for w in [1, writers] {
        let find = |m| runs.iter().find(|r| r.writers == w && r.mode == m);
        if let (Some(g), Some(f)) = (find(Durability::GroupCommit), find(Durability::FsyncEach)) {
            println!(
                "{w:>3} writer(s): group commit {:.2}× the msg/s of fsync-each; mean latency {:.2}×; {:.2}× the flushes per message",
                g.rate() / f.rate().max(1e-9),
                ms(g.mean()) / ms(f.mean()).max(1e-9),
                (g.flushes as f64 / g.done().max(1) as f64)
                    / (f.flushes as f64 / f.done().max(1) as f64).max(1e-9),
            );
        }
        if writers == 1 {
            break;
        }
    }
}
