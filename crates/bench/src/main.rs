//! `kurzdraht-bench`: measurements of the parts that decide throughput and recovery, and of
//! the whole path.
//!
//! - `commit`: submissions per second into the ledger — `enqueue` then `flush`, exactly what
//!   Submit does per message after sealing — with group commit versus one fsync per
//!   submission, at one writer and at many.
//! - `restart`: how long a Jobcenter node whose store holds a long delivered history and a
//!   queue of real, sealed messages takes after a restart to resume delivery to a running
//!   Jugendamt, over real gRPC with mutual TLS.
//!
//! - `e2e`: two real nodes as separate `kurzdraht serve` processes (mutual TLS, sled
//!   stores): a bare tonic unary call over the same mutual-TLS set-up (the baseline) versus
//!   the full path Submit → … → signed receipt stored by the sender, at several
//!   concurrencies, with latency percentiles, CPU per 1,000 messages and peak RSS per node.
//! - `backup`: the write pause of an online backup (`Ledger::export`, as the `Backup` call
//!   takes it) of a store holding a long delivered history, and the longest submission a
//!   writer running beside it saw.
//! - `login`: the time of a console login — right password, wrong one, disabled account,
//!   unknown name (the last three must not differ: `login.rs`).
//! - `footprint`: a node's RSS with a million consents and a million stored messages
//!   (`footprint.rs`).
//! - `console`: the latency of every console page (p50/p90/p99/max over HTTPS) with
//!   100,000 consents and 100,000 messages in the store, against p99 < 100 ms (`console.rs`).
//!
//! Results go to stdout as tables (with the machine and the parameters); progress of long
//! phases goes to stderr. Every run is bounded in time.
//!
//! Modules: `commit.rs`, `console.rs`, `restart.rs` (restart and backup), `e2e.rs` (with `link.rs`, the
//! delaying forwarder), `footprint.rs` (with `footprint_fill.rs`, `footprint_report.rs`); `common.rs` holds the machine, formatting, sealed
//! test data and /proc readings they share. The nodes run as real `kurzdraht serve`
//! processes (`kurzdraht_testkit::ServeProcess`, the binary of the same profile, built when
//! missing) or in-process.

#![forbid(unsafe_code)]

mod commit;
mod common;
mod console;
mod e2e;
mod footprint;
mod footprint_fill;
mod footprint_report;
mod link;
mod login;
mod restart;

use clap::Parser;
use commit::commit;
use e2e::{e2e, E2eShape};
use restart::{backup, restart};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Benchmarks of kurzdraht: ledger group commit versus fsync per submission, how fast a
/// restarted node with a long history resumes delivery, the write pause of an online backup,
/// a node's memory at scale, and the end-to-end path versus a bare call.
#[derive(Parser)]
#[command(name = "kurzdraht-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Submissions per second into the ledger (enqueue + flush, as Submit does per message):
    /// group commit versus one fsync per submission, at 1 writer and at --writers.
    Commit {
        /// Concurrent writer tasks of the second pair of runs (the first pair uses 1).
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Submissions per run.
        #[arg(long, default_value_t = 4000)]
        messages: usize,
        /// Rounds of all four runs; the table shows each configuration's median round (by
        /// msg/s) and the range over the rounds, as a gauge of noise on a shared machine.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Stop a run after this many seconds; the table shows how many it completed.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
        /// Create the temporary stores here (default: the system temp directory). What an
        /// fsync costs depends on this file system.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Each submission carries an idempotency key, as a keyed Submit stores it: the
        /// transaction also looks for an earlier answer and stores this one (sealed, with
        /// its time index entry).
        #[arg(long)]
        idempotency_keys: bool,
    },
    /// End to end on two real `kurzdraht serve` processes (mutual TLS, sled stores): a bare
    /// tonic unary call of the same size over the same mTLS set-up (baseline) versus the full
    /// path Submit → consent → outbox → signed envelope → deliver → verify → inbox → signed
    /// receipt stored by the sender; msg/s, p50/p99/p99.9, CPU per 1,000 msgs, peak RSS.
    E2e {
        /// Seconds of each measured run (one baseline and one kurzdraht run per concurrency).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent callers, comma-separated; each loops: call (or submit and wait until
        /// DELIVERED), then the next.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 128])]
        concurrency: Vec<usize>,
        /// Payload (encoded CertificationRequest body) of about this many bytes, padded via
        /// its reason text; default: the request with a one-sentence reason.
        #[arg(long)]
        payload_bytes: Option<usize>,
        /// Set the Jugendamt's limits.peer_requests_per_second (deliveries it admits per
        /// second from one peer) to this; default: the node.toml default.
        #[arg(long)]
        peer_rate: Option<u32>,
        /// Young people the messages are about, each with a consent of their own (callers
        /// take them in turn); messages about one person keep their order, those about
        /// different people may overtake each other (delivery lanes).
        #[arg(long, default_value_t = 64)]
        persons: usize,
        /// Put a link with this one-way delay (ms) between the Jobcenter and the Jugendamt —
        /// and between the baseline's ends — as between two agencies' data centres; 0: plain
        /// loopback.
        #[arg(long, default_value_t = 0)]
        link_delay_ms: u64,
        /// Create the temporary federation here (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A node's memory at scale: fills a Jugendamt's store (sealed at rest) with replicated
    /// consents and received CertificationRequests, runs `kurzdraht serve` on it under a light
    /// load and prints its RSS after open and under load against the 100 MB target.
    Footprint {
        /// Consents replicated to the Jugendamt (each arrived as a signed ConsentNotice).
        #[arg(long, default_value_t = 1_000_000)]
        consents: usize,
        /// CertificationRequests received by the Jugendamt (sealed envelopes with receipts).
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// Seconds of load on the filled node.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Seconds the node stays idle after it first answers, before the load (longer if its
        /// start-up work is still running: until it uses under 10% of a core).
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
        /// Concurrent callers of the load (closed loop).
        #[arg(long, default_value_t = 4)]
        callers: usize,
        /// Set the Jugendamt's `[storage] cache_mb` (sled's page cache) to this; default: the
        /// node.toml default.
        #[arg(long)]
        cache_mb: Option<u64>,
        /// Create the temporary federation here (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Every console page's latency over HTTPS (p50/p90/p99/max) on a `kurzdraht serve`
    /// whose store holds many consents and messages (filled as `footprint` fills it, plus the
    /// node's own sent messages), against p99 < 100 ms per page.
    Console {
        /// Consents replicated to the Jugendamt (each arrived as a signed ConsentNotice).
        #[arg(long, default_value_t = 100_000)]
        consents: usize,
        /// Messages in the store: received CertificationRequests in the inbox and the node's
        /// own sent MoveOutCertifications (finished DELIVERED), split by --sent-percent.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Percent of --messages that are sent ones.
        #[arg(long, default_value_t = 10)]
        sent_percent: usize,
        /// Measured requests per page.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Unmeasured requests per page before them.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Stop a page's requests after this many seconds; the table shows how many it made.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
        /// A new connection (TCP + TLS + HTTP/1.1 handshake) per request instead of one
        /// kept-alive connection per account.
        #[arg(long)]
        fresh_connections: bool,
        /// Create the temporary federation here (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The write pause of an online backup of a Jobcenter store with a long delivered history
    /// (each delivered envelope kept), and the longest submission (enqueue + flush) a writer
    /// running beside the backup saw.
    Backup {
        /// Messages in the store's history, enqueued and finished as DELIVERED.
        #[arg(long, default_value_t = 100_000)]
        delivered: usize,
        /// Backups taken, one after another.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Create the temporary federation (and the archives) here (default: the system temp
        /// directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The time of a console login (Accounts::authenticate: Argon2id verification, audit
    /// entry, flush) for the right password, a wrong one, a disabled account and an unknown
    /// name; the three refusals should take alike.
    Login {
        /// Logins of each case.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Create the temporary store here (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Time for a restarted Jobcenter node (long delivered history, queued messages) to
    /// resume delivery to a running Jugendamt over real gRPC with mutual TLS.
    Restart {
        /// Messages in the store's history, enqueued and finished as DELIVERED.
        #[arg(long, default_value_t = 100_000)]
        delivered: usize,
        /// Real sealed CertificationRequests left QUEUED for the restarted node to deliver.
        #[arg(long, default_value_t = 1000)]
        queued: usize,
        /// Give up waiting for the queue to drain after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Create the temporary federation here (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Commit {
            writers,
            messages,
            rounds,
            max_seconds,
            dir,
            idempotency_keys,
        } => {
            commit(
                writers,
                messages,
                rounds,
                Duration::from_secs(max_seconds),
                dir,
                idempotency_keys,
            )
            .await
        }
        BenchCommand::Restart {
            delivered,
            queued,
            timeout,
            dir,
        } => restart(delivered, queued, Duration::from_secs(timeout), dir).await,
        BenchCommand::Backup {
            delivered,
            rounds,
            dir,
        } => backup(delivered, rounds, dir).await,
        BenchCommand::Login { rounds, dir } => login::login(rounds, dir).await,
        BenchCommand::E2e {
            seconds,
            concurrency,
            payload_bytes,
            peer_rate,
            persons,
            link_delay_ms,
            dir,
        } => {
            let shape = E2eShape {
                persons,
                link_delay: Duration::from_millis(link_delay_ms),
            };
            e2e(seconds, concurrency, payload_bytes, peer_rate, shape, dir).await
        }
        BenchCommand::Console {
            consents,
            messages,
            sent_percent,
            requests,
            warmup,
            max_seconds,
            fresh_connections,
            dir,
        } => {
            console::run(console::Params {
                consents,
                messages,
                sent_percent,
                requests,
                warmup,
                max_seconds,
                fresh_connections,
                dir,
            })
            .await
        }
        BenchCommand::Footprint {
            consents,
            messages,
            seconds,
            idle_seconds,
            callers,
            cache_mb,
            dir,
        } => {
            crate::footprint::run(crate::footprint::Params {
                consents,
                messages,
                load: Duration::from_secs(seconds),
                idle: Duration::from_secs(idle_seconds),
                callers,
                cache_mb,
                dir,
            })
            .await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The in-process nodes' warnings and errors on stderr, as `kurzdraht` logs by default;
    // KURZDRAHT_LOG or RUST_LOG set another filter.
    let directives = ["KURZDRAHT_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "warn".to_string());
    let filter = match tracing_subscriber::EnvFilter::builder().parse(&directives) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: log filter {directives:?}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
