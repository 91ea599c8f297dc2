//! `kurzdraht bench`: measurements of the parts that decide throughput and recovery, and of
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
//! - `footprint`: a node's RSS with a million consents and a million stored messages
//!   (`bench_footprint.rs`).
//!
//! Results go to stdout as tables (with the machine and the parameters); progress of long
//! phases goes to stderr. Every run is bounded in time.

use anyhow::{bail, Context};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_envelope::{envelope_hash, ids, seal, sign_receipt, SigningKey};
use kurzdraht_ledger::{DataKey, Durability, Finish, Ledger, LedgerError, Outgoing};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::server::{self, Listeners};
use kurzdraht_node::{clock, pki, NodeError};
use kurzdraht_proto::v1::{self as pb, message_body::Body, MessageKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const JC: &str = "jobcenter-segeberg";
pub(crate) const JA: &str = "jugendamt-kreis-segeberg";
/// Payload size of the envelope the commit benchmark stores.
const COMMIT_PAYLOAD_BYTES: usize = 1024;
/// How often the restart benchmark asks the Jobcenter node for a status.
const POLL: Duration = Duration::from_millis(5);

#[derive(clap::Subcommand)]
pub enum BenchCommand {
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

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
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
        BenchCommand::Footprint {
            consents,
            messages,
            seconds,
            idle_seconds,
            callers,
            cache_mb,
            dir,
        } => {
            crate::bench_footprint::run(crate::bench_footprint::Params {
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

// ---------------------------------------------------------------- the machine

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

/// The file system holding `dir`: (mount point, type, device), from /proc/mounts.
fn file_system(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown file system".into();
    };
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string(), f[0].to_string()))
        })
        .filter(|(mount, _, _)| dir.starts_with(mount))
        .max_by_key(|(mount, _, _)| mount.len());
    match best {
        Some((mount, fstype, dev)) if fstype == "tmpfs" || fstype == "ramfs" => format!(
            "{fstype} ({dev} on {mount}) — WARNING: in memory, fsync costs nothing here; use --dir"
        ),
        Some((mount, fstype, dev)) => format!("{fstype} ({dev} on {mount})"),
        None => "unknown file system".into(),
    }
}

pub(crate) fn print_machine(base: &Path) {
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let arch = command_output("uname", &["-m"]).unwrap_or_else(|| std::env::consts::ARCH.into());
    let kernel = command_output("uname", &["-sr"]).unwrap_or_else(|| std::env::consts::OS.into());
    println!(
        "machine:    nproc {nproc}, {arch}, {}, {kernel}",
        cpu_model()
    );
    println!("stores in:  {} — {}", base.display(), file_system(base));
    println!(
        "build:      {}",
        if cfg!(debug_assertions) {
            "DEBUG (numbers are not representative; use --release)"
        } else {
            "release"
        }
    );
    println!("load avg:   {} (1/5/15 min, at start)", load_average());
}

pub(crate) fn base_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let base = dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    Ok(base)
}

/// A Segeberg federation (`pki init` on free loopback ports) in a fresh temporary directory
/// under `dir` (default: the system temp directory), removed when dropped.
pub(crate) struct TempFederation {
    tmp: tempfile::TempDir,
    files: Vec<pki::AgencyFiles>,
}

impl TempFederation {
    pub(crate) fn create(dir: Option<PathBuf>, bench: &str) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("kurzdraht-bench-{bench}-"))
            .tempdir_in(base_dir(dir)?)?;
        let files = pki::init(
            &tmp.path().join("federation"),
            &pki::segeberg_on_free_ports(false)?,
        )?;
        Ok(Self { tmp, files })
    }

    /// Where logs and other files of the run go.
    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn files_of(&self, id: &str) -> anyhow::Result<&pki::AgencyFiles> {
        self.files
            .iter()
            .find(|f| f.id == id)
            .with_context(|| format!("pki init wrote no {id}"))
    }

    /// Adds `line` at the top of `section` (e.g. "[limits]") of `id`'s node.toml.
    pub(crate) fn configure(&self, id: &str, section: &str, line: &str) -> anyhow::Result<()> {
        let path = &self.files_of(id)?.node_config;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let header = format!("{section}\n");
        if !text.contains(&header) {
            bail!("{} has no {section} section", path.display());
        }
        let text = text.replacen(&header, &format!("{header}{line}\n"), 1);
        pki::replace_file(path, &text)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- formatting

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", ms(d))
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

pub(crate) fn fmt_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= MIB {
        format!("{:.1} MiB", b as f64 / MIB)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------- sealed test data

/// A subject who is 20 today (so the U25 rule holds whenever the benchmark runs).
fn subject() -> pb::Subject {
    subject_of_person(0)
}

/// Person `i` of a benchmark: Lena Hansen, Lena Hansen-B, … (letters only, as names are).
fn subject_of_person(i: usize) -> pb::Subject {
    let mut family = "Hansen".to_string();
    if i > 0 {
        family.push('-');
        let mut n = i;
        let mut suffix = Vec::new();
        while n > 0 {
            suffix.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        let suffix: String = suffix.into_iter().rev().collect();
        let mut chars = suffix.chars();
        if let Some(first) = chars.next() {
            family.push(first.to_ascii_uppercase());
            family.extend(chars);
        }
    }
    let year = clock::date_of_ms(clock::now_ms())
        .map(|d| d.year())
        .unwrap_or(2026);
    pb::Subject {
        given_name: "Lena".into(),
        family_name: family,
        date_of_birth: format!("{:04}-01-15", year - 20),
        address: Some(pb::Address {
            street: "Kurhausstraße 7".into(),
            postal_code: "23795".into(),
            city: "Bad Segeberg".into(),
        }),
        case_references: vec![pb::CaseReference {
            agency: JC.into(),
            reference: "JC-SE-U25-0815".into(),
        }],
    }
}

fn certification_request(reason: String) -> pb::MessageBody {
    certification_request_about(subject(), reason)
}

fn certification_request_about(subject: pb::Subject, reason: String) -> pb::MessageBody {
    let today = clock::date_of_ms(clock::now_ms())
        .map(|d| d.to_string())
        .unwrap_or_default();
    pb::MessageBody {
        body: Some(Body::CertificationRequest(pb::CertificationRequest {
            subject: Some(subject),
            reason,
            respond_by: today,
            caseworker: "Herr Jensen".into(),
        })),
    }
}

/// The evidence reference of the benchmarks' consents.
const BENCH_EVIDENCE: &str = "JC-SE/Einwilligung/2026/0815 (unterschriebenes Formular)";

/// The categories of data the benchmarks' consents cover: those of a CertificationRequest.
fn bench_categories() -> Vec<i32> {
    [
        pb::DataCategory::Identity,
        pb::DataCategory::Address,
        pb::DataCategory::CaseReferences,
        pb::DataCategory::HousingSituation,
    ]
    .map(|c| c as i32)
    .to_vec()
}

pub(crate) const REASON: &str = "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II; Stellungnahme zur Notwendigkeit des Auszugs erbeten.";

/// Seals `body` from `sender` and describes it for the outbox, as `Node::seal_outgoing` does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_outgoing(
    key: &SigningKey,
    sender: &str,
    kind: MessageKind,
    recipient: &str,
    consent_id: &str,
    body: &pb::MessageBody,
    now_ms: i64,
    deadline: Duration,
) -> Outgoing {
    let message_id = ids::new_id();
    let header = pb::EnvelopeHeader {
        message_id: message_id.clone(),
        kind: kind as i32,
        sender: sender.to_string(),
        recipient: recipient.to_string(),
        created_at_ms: now_ms,
        consent_id: consent_id.to_string(),
        ..Default::default()
    };
    let envelope = seal(header, body, key);
    Outgoing {
        envelope_sha256: envelope_hash(&envelope),
        envelope,
        message_id,
        kind,
        recipient: recipient.to_string(),
        consent_id: consent_id.to_string(),
        submitted_at_ms: now_ms,
        deadline_ms: now_ms.saturating_add(deadline.as_millis() as i64),
    }
}

pub(crate) fn envelope_bytes(out: &Outgoing) -> usize {
    let e = &out.envelope;
    e.header.len() + e.payload.len() + e.signature.len() + e.signer.len()
}

/// One real CertificationRequest envelope whose payload is about [`COMMIT_PAYLOAD_BYTES`].
fn commit_template() -> anyhow::Result<Outgoing> {
    let key = SigningKey::generate()?;
    let consent_id = ids::new_id();
    let reason = padded_reason(&key, &consent_id, COMMIT_PAYLOAD_BYTES);
    Ok(seal_outgoing(
        &key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        &consent_id,
        &certification_request(reason),
        clock::now_ms(),
        Duration::from_secs(7 * 24 * 3600),
    ))
}

/// A reason text that makes a sealed CertificationRequest's payload about `target` bytes.
fn padded_reason(key: &SigningKey, consent_id: &str, target: usize) -> String {
    let bare = seal_outgoing(
        key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        consent_id,
        &certification_request(String::new()),
        clock::now_ms(),
        Duration::from_secs(7 * 24 * 3600),
    )
    .envelope
    .payload
    .len();
    // field tag + two-byte length prefix + the text
    let pad = target.saturating_sub(bare + 3);
    let mut reason = String::new();
    while reason.len() < pad {
        reason.push_str(REASON);
        reason.push(' ');
    }
    let cut = (0..=pad.min(reason.len()))
        .rev()
        .find(|i| reason.is_char_boundary(*i))
        .unwrap_or(0);
    reason.truncate(cut);
    reason
}

// ---------------------------------------------------------------- bench commit

fn mode_name(mode: Durability) -> &'static str {
    match mode {
        Durability::GroupCommit => "group-commit",
        Durability::FsyncEach => "fsync-each",
    }
}

struct CommitRun {
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
fn keyed_request(out: &Outgoing) -> kurzdraht_ledger::KeyedRequest {
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

async fn commit_run(
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

async fn commit(
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
    println!("kurzdraht bench commit — ledger submissions: enqueue + flush per message");
    print_machine(&base);
    println!(
        "parameters: {messages} submissions per run, writers 1 and {writers}, {rounds} round(s), at most {} s per run",
        limit.as_secs()
    );
    println!(
        "envelope:   a real sealed CertificationRequest, {} B (payload {} B), fresh message id per submission",
        envelope_bytes(&template),
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
    let mut plan = vec![(1, Durability::GroupCommit), (1, Durability::FsyncEach)];
    if writers != 1 {
        plan.push((writers, Durability::GroupCommit));
        plan.push((writers, Durability::FsyncEach));
    }
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
            let run = commit_run(&base, &template, *mode, *w, messages, limit, keyed).await?;
            eprintln!(
                "    done: {} in {:.2} s ({:.0} msg/s)",
                run.done(),
                run.elapsed.as_secs_f64(),
                run.rate()
            );
            all[i].push(run);
        }
    }
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
    for (r, range) in runs.iter().zip(&ranges) {
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
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- bench restart

/// Opens a store with its data key, waiting (up to 10 s) for a handle dropped just before to
/// release its lock.
async fn open_when_unlocked(dir: &Path, key: &DataKey) -> anyhow::Result<Ledger> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open_encrypted(dir, key) {
            Err(LedgerError::Locked { .. }) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Bytes of the files under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Filled {
    /// The consent notice, then the queued requests, in outbox (FIFO) order.
    queued_ids: Vec<String>,
    consent_id: String,
    history: Duration,
    queue: Duration,
    flush: Duration,
    envelope_bytes: usize,
}

/// Fills the Jobcenter's store: a consent naming the Jugendamt (its notice queued first),
/// `delivered` messages finished as DELIVERED, then `queued` real requests left QUEUED.
async fn fill(jc: &NodeConfig, delivered: usize, queued: usize) -> anyhow::Result<Filled> {
    std::fs::create_dir_all(&jc.data_dir)?;
    let ledger = Ledger::open_encrypted(&jc.data_dir, &jc.data_key)?;
    let key = &jc.signing_key;
    let deadline = jc.delivery.deadline;
    let now = clock::now_ms();
    let consent = pb::ConsentRecord {
        consent_id: ids::new_id(),
        subject: Some(subject()),
        given_by: pb::ConsentGiver::Person as i32,
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: now,
        valid_until_ms: now + 365 * clock::DAY_MS,
        categories: bench_categories(),
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![0x5e; 32],
        evidence_reference: BENCH_EVIDENCE.into(),
        recorded_by: "Herr Jensen".into(),
        recorded_at_ms: now,
        ..Default::default()
    };
    let consent_id = consent.consent_id.clone();
    let notice_body = pb::MessageBody {
        body: Some(Body::ConsentNotice(pb::ConsentNotice {
            consent: Some(consent.clone()),
        })),
    };
    let notice = seal_outgoing(
        key,
        JC,
        MessageKind::ConsentNotice,
        JA,
        &consent_id,
        &notice_body,
        now,
        deadline,
    );
    ledger.record_consent(&consent, std::slice::from_ref(&notice), now)?;
    let mut queued_ids = vec![notice.message_id.clone()];

    // History: the same sealed request under fresh ids, each enqueued and at once finished
    // as DELIVERED with a (fake, but realistically sized) receipt.
    let template = seal_outgoing(
        key,
        JC,
        MessageKind::CertificationRequest,
        JA,
        &consent_id,
        &certification_request(REASON.into()),
        now,
        deadline,
    );
    let receipt = sign_receipt(
        &pb::Receipt {
            message_id: template.message_id.clone(),
            envelope_sha256: template.envelope_sha256.to_vec(),
            sender: JC.into(),
            receiver: JA.into(),
            received_at_ms: now,
        },
        key,
    );
    let delivered_as = Finish::Delivered { receipt };
    let started = Instant::now();
    for i in 1..=delivered {
        let mut out = template.clone();
        out.message_id = ids::new_id();
        let at = clock::now_ms();
        out.submitted_at_ms = at;
        ledger.enqueue(&out)?;
        ledger.finish(&out.message_id, &delivered_as, at)?;
        if i % 10_000 == 0 || i == delivered {
            let s = started.elapsed().as_secs_f64();
            eprintln!(
                "  history: {i} / {delivered} delivered messages written ({s:.1} s, {:.0}/s)",
                i as f64 / s.max(1e-9)
            );
        }
    }
    let history = started.elapsed();

    // The queue: real sealed requests, each its own envelope, citing the consent.
    let started = Instant::now();
    for _ in 0..queued {
        let out = seal_outgoing(
            key,
            JC,
            MessageKind::CertificationRequest,
            JA,
            &consent_id,
            &certification_request(REASON.into()),
            clock::now_ms(),
            deadline,
        );
        ledger.enqueue(&out)?;
        queued_ids.push(out.message_id);
    }
    let queue = started.elapsed();
    eprintln!(
        "  queue: {queued} sealed CertificationRequests queued ({:.2} s)",
        queue.as_secs_f64()
    );
    let started = Instant::now();
    ledger.flush().await?;
    let flush = started.elapsed();
    if ledger.outbox_len(JA) != queued + 1 {
        bail!(
            "the outbox holds {} messages for {JA}, expected {}",
            ledger.outbox_len(JA),
            queued + 1
        );
    }
    Ok(Filled {
        queued_ids,
        consent_id,
        history,
        queue,
        flush,
        envelope_bytes: envelope_bytes(&template),
    })
}

struct RunningNode {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    fn start(config: NodeConfig, listeners: Listeners) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        Ok(self.task.await.context("node task")??)
    }
}

/// Connects the IT system's client, retrying until `until`.
async fn client_until(config: &ClientConfig, until: Instant) -> anyhow::Result<AgencyClient> {
    loop {
        match connect(config).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= until => return Err(e.into()),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// What the restarted node did, in milliseconds after `run()` was called.
struct Resumed {
    api_answering: Duration,
    notice: i64,
    first_request: i64,
    half: i64,
    last: i64,
    /// (messages delivered so far, ms) at every checkpoint.
    timeline: Vec<(usize, i64)>,
}

async fn watch_delivery(
    client: &mut AgencyClient,
    node: &RunningNode,
    ids: &[String],
    t0: Instant,
    t0_ms: i64,
    until: Instant,
) -> anyhow::Result<Resumed> {
    let n = ids.len();
    let step = (n / 20).max(1);
    let mut checkpoints: Vec<usize> = vec![0, 1.min(n - 1), n / 2];
    checkpoints.extend((step..n).step_by(step));
    checkpoints.push(n - 1);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let mut api_answering = None;
    let mut at = std::collections::BTreeMap::new();
    for &i in &checkpoints {
        loop {
            if node.task.is_finished() {
                bail!("the Jobcenter node stopped while delivering");
            }
            if Instant::now() >= until {
                bail!(
                    "gave up: message {i} of {n} still not DELIVERED after {:.0} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            let status = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_status(pb::GetStatusRequest {
                    message_id: ids[i].clone(),
                }),
            )
            .await;
            let status = match status {
                Ok(Ok(s)) => s.into_inner(),
                Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Ok(Err(s)) => return Err(s.into()),
                Err(_) => continue, // not answering yet: the node may still be opening its store
            };
            api_answering.get_or_insert_with(|| t0.elapsed());
            match pb::DeliveryState::try_from(status.state) {
                Ok(pb::DeliveryState::Delivered) => {
                    let when = status.updated_at_ms - t0_ms;
                    at.insert(i, when);
                    eprintln!(
                        "  {} / {n} delivered, {:.2} s after run()",
                        i + 1,
                        when as f64 / 1000.0
                    );
                    break;
                }
                Ok(pb::DeliveryState::Queued) => tokio::time::sleep(POLL).await,
                other => bail!(
                    "message {i} of {n} ended {other:?}, not DELIVERED: {}",
                    status.detail
                ),
            }
        }
    }
    let get = |i: usize| at.get(&i).copied().unwrap_or_default();
    Ok(Resumed {
        api_answering: api_answering.unwrap_or_default(),
        notice: get(0),
        first_request: get(1.min(n - 1)),
        half: get(n / 2),
        last: get(n - 1),
        timeline: at.iter().map(|(i, t)| (i + 1, *t)).collect(),
    })
}

/// The final state of every watched message, counted by state name (16 calls in flight).
async fn final_states(
    client: &AgencyClient,
    ids: &[String],
) -> anyhow::Result<std::collections::BTreeMap<&'static str, usize>> {
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(16).max(1)) {
        let (mut client, chunk) = (client.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut names = Vec::with_capacity(chunk.len());
            for message_id in chunk {
                let s = client
                    .get_status(pb::GetStatusRequest { message_id })
                    .await?
                    .into_inner();
                names.push(
                    pb::DeliveryState::try_from(s.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("UNKNOWN"),
                );
            }
            anyhow::Ok(names)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        for name in t.await.context("status task")?? {
            *counts.entry(name).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Mean round trip of `n` sequential GetStatus calls (for reading the polling figures).
async fn status_round_trip(
    client: &mut AgencyClient,
    message_id: &str,
    n: u32,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..n {
        client
            .get_status(pb::GetStatusRequest {
                message_id: message_id.to_string(),
            })
            .await?;
    }
    Ok(start.elapsed() / n)
}

async fn inbox_len(client: &mut AgencyClient) -> anyhow::Result<usize> {
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn backup(delivered: usize, rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if rounds == 0 {
        bail!("--rounds must be above 0");
    }
    let fed = TempFederation::create(dir, "backup")?;
    let jc = NodeConfig::load(&fed.files_of(JC)?.node_config)?;
    println!("kurzdraht bench backup — the write pause of an online backup");
    print_machine(fed.path());
    println!(
        "parameters: {delivered} delivered messages of history (envelopes kept), {rounds} backups"
    );
    eprintln!(
        "filling the Jobcenter's store in {} …",
        jc.data_dir.display()
    );
    let filled = fill(&jc, delivered, 1).await?;
    let ledger = open_when_unlocked(&jc.data_dir, &jc.data_key).await?;
    ledger.flush().await?;
    println!(
        "store:      {:.1} MiB on disk, envelope {} bytes",
        dir_bytes(&jc.data_dir) as f64 / (1024.0 * 1024.0),
        filled.envelope_bytes
    );
    println!("round  entries  archive MiB  pause ms  backup ms  longest submission beside it ms");
    for round in 1..=rounds {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (ledger, stop, key, consent_id) = (
                ledger.clone(),
                stop.clone(),
                jc.signing_key.clone(),
                filled.consent_id.clone(),
            );
            let deadline = jc.delivery.deadline;
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let out = seal_outgoing(
                        &key,
                        JC,
                        MessageKind::CertificationRequest,
                        JA,
                        &consent_id,
                        &certification_request(REASON.into()),
                        clock::now_ms(),
                        deadline,
                    );
                    let t = Instant::now();
                    ledger.enqueue(&out)?;
                    ledger.flush().await?;
                    longest = longest.max(t.elapsed());
                    n += 1;
                }
                anyhow::Ok((longest, n))
            })
        };
        // let the writer run before the backup begins
        tokio::time::sleep(Duration::from_millis(200)).await;
        let archive = fed.path().join(format!("backup-{round}.kzb"));
        let started = Instant::now();
        let exported = {
            let ledger = ledger.clone();
            let archive = archive.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let file = kurzdraht_node::service::backup::create_private(&archive)?;
                let manifest = kurzdraht_ledger::BackupManifest {
                    agency: JC.into(),
                    taken_at_ms: clock::now_ms(),
                    schema: 0,
                };
                Ok(ledger.export(manifest, std::io::BufWriter::new(file))?)
            })
            .await??
        };
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::SeqCst);
        let (longest, writes) = writer.await??;
        println!(
            "{round:>5}  {:>7}  {:>11.1}  {:>8}  {:>9}  {:>8} ({writes} submissions)",
            exported.entries,
            exported.bytes as f64 / (1024.0 * 1024.0),
            exported.pause.as_millis(),
            took.as_millis(),
            longest.as_millis()
        );
        std::fs::remove_file(&archive)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn restart(
    delivered: usize,
    queued: usize,
    timeout: Duration,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if queued == 0 || timeout.is_zero() {
        bail!("--queued and --timeout must be above 0");
    }
    let fed = TempFederation::create(dir, "restart")?;
    let files_of = |id: &str| fed.files_of(id);
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)?;
    let jc_client = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client = ClientConfig::load(&files_of(JA)?.client_config)?;

    println!("kurzdraht bench restart — a restarted Jobcenter node resumes delivery");
    print_machine(fed.path());
    println!(
        "parameters: {delivered} delivered messages of history, {queued} queued CertificationRequests (+1 consent notice queued first), timeout {} s",
        timeout.as_secs()
    );
    println!("setup:      real PKI (pki init), both nodes in this process on loopback (gRPC, mutual TLS), status polled via the Jobcenter's AgencyApi every {} ms", POLL.as_millis());

    eprintln!(
        "filling the Jobcenter's store in {} …",
        jc.data_dir.display()
    );
    let filled = fill(&jc, delivered, queued).await?;
    let t = Instant::now();
    let ledger = open_when_unlocked(&jc.data_dir, &jc.data_key).await?;
    let open_time = t.elapsed();
    let sled_size = ledger.size_on_disk()?;
    let t = Instant::now();
    let head = ledger.outbox_head(JA)?;
    let head_time = t.elapsed();
    let consent_held = ledger.consent(&filled.consent_id)?.is_some();
    drop(ledger);
    if head.map(|h| h.message_id).as_ref() != filled.queued_ids.first() || !consent_held {
        bail!("the filled store does not start its queue with the consent notice");
    }
    let files_size = dir_bytes(&jc.data_dir);

    eprintln!("starting the Jugendamt node …");
    let ja_node = RunningNode::start(ja.clone(), Listeners::bind(&ja).await?);
    let outcome = async {
        let until = Instant::now() + Duration::from_secs(30);
        let mut ja_api = client_until(&ja_client, until).await?;
        ja_api
            .list_consents(pb::ListConsentsRequest::default())
            .await?;
        eprintln!("restarting the Jobcenter node on its filled store …");
        let listeners = Listeners::bind(&jc).await?;
        let (t0, t0_ms) = (Instant::now(), clock::now_ms());
        let jc_node = RunningNode::start(jc.clone(), listeners);
        let until = t0 + timeout;
        let watched = tokio::time::timeout_at(tokio::time::Instant::from_std(until), async {
            let mut jc_api = client_until(&jc_client, until).await?;
            let resumed =
                watch_delivery(&mut jc_api, &jc_node, &filled.queued_ids, t0, t0_ms, until).await?;
            eprintln!("checking every queued message's final state …");
            let states = final_states(&jc_api, &filled.queued_ids).await?;
            let received = inbox_len(&mut ja_api).await?;
            let rtt = status_round_trip(&mut jc_api, &filled.queued_ids[0], 20).await?;
            anyhow::Ok((resumed, states, received, rtt))
        })
        .await;
        let stopped = jc_node.stop().await;
        let watched = watched
            .map_err(|_| anyhow::anyhow!("gave up after {} s (--timeout)", timeout.as_secs()))??;
        stopped.context("stopping the Jobcenter node")?;
        anyhow::Ok(watched)
    }
    .await;
    let ja_stopped = ja_node.stop().await;
    let (resumed, states, received, rtt) = outcome?;
    ja_stopped.context("stopping the Jugendamt node")?;

    let secs = |ms: i64| format!("{:.3} s", ms as f64 / 1000.0);
    let rate = |n: usize, ms: i64| n as f64 / (ms as f64 / 1000.0).max(1e-3);
    println!();
    println!("store of the Jobcenter before the restart");
    println!(
        "  {:<52} {:>12}",
        "history written (enqueue + finish DELIVERED)",
        format!("{:.2} s", filled.history.as_secs_f64())
    );
    if delivered > 0 {
        println!(
            "  {:<52} {:>12}",
            "  rate",
            format!(
                "{:.0} msg/s",
                delivered as f64 / filled.history.as_secs_f64().max(1e-9)
            )
        );
    }
    println!(
        "  {:<52} {:>12}",
        format!("{queued} requests sealed and queued"),
        format!("{:.2} s", filled.queue.as_secs_f64())
    );
    println!(
        "  {:<52} {:>12}",
        "one Ledger::flush of all that",
        fmt_duration(filled.flush)
    );
    println!(
        "  {:<52} {:>12}",
        "envelope of a request",
        format!("{} B", filled.envelope_bytes)
    );
    println!(
        "  {:<52} {:>12}",
        "size on disk (sled size_on_disk)",
        fmt_bytes(sled_size)
    );
    println!(
        "  {:<52} {:>12}",
        "size on disk (files in data_dir)",
        fmt_bytes(files_size)
    );
    println!(
        "  {:<52} {:>12}",
        "Ledger::open_encrypted of the filled store alone",
        fmt_duration(open_time)
    );
    println!(
        "  {:<52} {:>12}",
        "then outbox_head (oldest queued message)",
        fmt_duration(head_time)
    );
    println!();
    println!("restart: times after server::run() was called for the Jobcenter (Jugendamt running)");
    println!(
        "  {:<52} {:>12}",
        "AgencyApi answers (first GetStatus)",
        fmt_duration(resumed.api_answering)
    );
    println!(
        "  {:<52} {:>12}",
        "consent notice (1st queued) DELIVERED",
        secs(resumed.notice)
    );
    println!(
        "  {:<52} {:>12}",
        "first CertificationRequest DELIVERED",
        secs(resumed.first_request)
    );
    println!(
        "  {:<52} {:>12}",
        format!("message {} of {} DELIVERED", queued / 2 + 1, queued + 1),
        secs(resumed.half)
    );
    println!(
        "  {:<52} {:>12}",
        format!("all {} queued DELIVERED", queued + 1),
        secs(resumed.last)
    );
    println!(
        "  {:<52} {:>12}",
        format!("delivery rate ({queued} requests after the notice)"),
        format!("{:.0} msg/s", rate(queued, resumed.last - resumed.notice))
    );
    let timeline: Vec<String> = resumed
        .timeline
        .iter()
        .map(|(n, t)| format!("{n}@{:.2}s", *t as f64 / 1000.0))
        .collect();
    println!("  timeline (delivered@time): {}", timeline.join(" "));
    let all_delivered = states.len() == 1
        && states.get("DELIVERED") == Some(&(queued + 1))
        && received == queued + 1;
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("  final states at the Jobcenter: {}", states.join(", "));
    println!("  Jugendamt inbox holds {received} messages");
    println!(
        "  (times from each message's updated_at_ms, set by the node when it recorded DELIVERED)"
    );
    println!(
        "  AgencyApi GetStatus round trip, 20 sequential calls to the idle node: mean {}",
        fmt_duration(rtt)
    );
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    if !all_delivered {
        println!("NOT every queued message was delivered exactly once");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- bench e2e

/// What the delivery worker logs (at info) when an attempt failed and will be retried.
const RETRY_LOG: &str = "delivery failed; will retry";

/// Warm-up calls (baseline) or messages (kurzdraht) before each measured run.
const WARM_UP: usize = 20;

/// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`, else the usual 100).
pub(crate) fn clock_ticks() -> f64 {
    command_output("getconf", &["CLK_TCK"])
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads) in clock ticks; `pid` "self" for this one.
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: field 3 (state) onwards; utime is 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub(crate) fn peak_rss(pid: &str) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM")
}

/// A kB figure of /proc/<pid>/status (e.g. "VmRSS", "VmHWM"), in bytes.
pub(crate) fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets a process's VmHWM to its current RSS (`echo 5 > /proc/<pid>/clear_refs`), so that
/// the next reading is the peak of one run; false where the kernel does not allow it.
pub(crate) fn reset_peak_rss(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A process whose CPU time and peak RSS a run reports.
struct Watched {
    label: &'static str,
    pid: String,
}

struct Usage {
    label: &'static str,
    cpu_secs: Option<f64>,
    peak_rss: Option<u64>,
}

struct UsageMeter {
    before: Vec<Option<u64>>,
}

impl UsageMeter {
    fn start(procs: &[Watched], resettable: &mut bool) -> Self {
        for p in procs {
            *resettable &= reset_peak_rss(&p.pid);
        }
        Self {
            before: procs.iter().map(|p| cpu_ticks(&p.pid)).collect(),
        }
    }

    fn stop(self, procs: &[Watched], ticks: f64) -> Vec<Usage> {
        procs
            .iter()
            .zip(self.before)
            .map(|(p, before)| Usage {
                label: p.label,
                cpu_secs: before
                    .zip(cpu_ticks(&p.pid))
                    .map(|(b, a)| a.saturating_sub(b) as f64 / ticks),
                peak_rss: peak_rss(&p.pid),
            })
            .collect()
    }
}

/// A `kurzdraht serve` child process; killed if dropped while still running.
pub(crate) struct ServeProcess {
    agency: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl ServeProcess {
    pub(crate) fn spawn(agency: &'static str, config: &Path, log: PathBuf) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the kurzdraht binary")?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting kurzdraht serve for {agency}"))?;
        Ok(Self { agency, child, log })
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Lines of its log containing `needle`, and of those, how many also contain `also`.
    fn count_in_log(&self, needle: &str, also: &str) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        let both = hits.iter().filter(|l| l.contains(also)).count();
        (hits.len(), both)
    }

    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the {} node exited ({status}); its log:\n{}",
                self.agency,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGTERM (a graceful stop: in-flight work finishes, the store is flushed), then waits
    /// up to 15 s before killing it.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.pid()])
                .status();
            let until = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait()?.is_none() {
                if Instant::now() >= until {
                    bail!(
                        "the {} node did not stop within 15 s of SIGTERM",
                        self.agency
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The baseline's PeerExchange: answers every delivery at once with an empty receipt — no
/// signature, no consent check, no storage.
struct BarePeer;

#[tonic::async_trait]
impl pb::peer_exchange_server::PeerExchange for BarePeer {
    async fn deliver(
        &self,
        _req: tonic::Request<pb::SignedEnvelope>,
    ) -> Result<tonic::Response<pb::SignedReceipt>, tonic::Status> {
        Ok(tonic::Response::new(pb::SignedReceipt::default()))
    }

    async fn deliver_batch(
        &self,
        _req: tonic::Request<pb::EnvelopeBatch>,
    ) -> Result<tonic::Response<pb::BatchOutcome>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the baseline answers unary calls only",
        ))
    }

    async fn list_delivered(
        &self,
        _req: tonic::Request<pb::ListDeliveredRequest>,
    ) -> Result<tonic::Response<pb::ListDeliveredResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }

    async fn fetch_delivered(
        &self,
        _req: tonic::Request<pb::FetchDeliveredRequest>,
    ) -> Result<tonic::Response<pb::FetchDeliveredResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }

    async fn list_received(
        &self,
        _req: tonic::Request<pb::ListReceivedRequest>,
    ) -> Result<tonic::Response<pb::ListReceivedResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the baseline keeps nothing"))
    }
}

type PeerClient = pb::peer_exchange_client::PeerExchangeClient<tonic::transport::Channel>;

/// A PeerExchange client of the Jobcenter to `endpoint`, built as the delivery worker does.
fn peer_client(jc: &NodeConfig, endpoint: &str) -> anyhow::Result<PeerClient> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
        .tls_config(kurzdraht_node::tls::peer_client_tls(&jc.tls, JA))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(jc.delivery.request_timeout)
        .connect_lazy();
    Ok(PeerClient::new(channel))
}

struct E2eRun {
    mode: &'static str,
    concurrency: usize,
    elapsed: Duration,
    /// End-to-end latency of every completed message, sorted.
    latencies: Vec<Duration>,
    usage: Vec<Usage>,
}

impl E2eRun {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Prints "… n done after t s" every 5 s while a run lasts.
fn ticker(done: Arc<AtomicUsize>, start: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!(
                "    … {} done after {:.0} s",
                done.load(Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            );
        }
    })
}

/// `concurrency` tasks call Deliver on the bare peer in a loop for `duration`.
async fn baseline_run(
    client: &PeerClient,
    envelope: &pb::SignedEnvelope,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (mut client, envelope, done) = (client.clone(), envelope.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.deliver(envelope.clone()).await?;
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let tick = ticker(done, start);
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("caller task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    tick.abort();
    if let Some(e) = failure {
        return Err(e.context("baseline call"));
    }
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

/// A submitted message the watcher waits for.
struct Pending {
    message_id: String,
    started: Instant,
    done: oneshot::Sender<anyhow::Result<Duration>>,
}

/// Follows the Jobcenter's WatchStatus stream (opened before the first Submit) and tells
/// each caller when its message reached DELIVERED. Latency = when the watcher saw the final
/// status (the Jobcenter publishes it once the verified receipt is durable) − when the
/// caller started its Submit. One stream for all callers instead of polling GetStatus.
async fn watch(
    mut statuses: tonic::Streaming<pb::MessageStatus>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    let mut waiting: HashMap<String, Pending> = HashMap::new();
    // Final statuses seen before their caller registered (Submit answered, delivery faster).
    let mut early: HashMap<String, (pb::MessageStatus, Instant)> = HashMap::new();
    let settle = |p: Pending, status: &pb::MessageStatus, seen: Instant| {
        let outcome = if status.state == pb::DeliveryState::Delivered as i32 {
            Ok(seen.saturating_duration_since(p.started))
        } else {
            Err(anyhow::anyhow!(
                "message {} ended {:?}, not DELIVERED: {}",
                p.message_id,
                pb::DeliveryState::try_from(status.state),
                status.detail
            ))
        };
        let _ = p.done.send(outcome);
    };
    let mut callers_open = true;
    loop {
        tokio::select! {
            pending = rx.recv(), if callers_open => match pending {
                Some(p) => match early.remove(&p.message_id) {
                    Some((status, seen)) => settle(p, &status, seen),
                    None => {
                        waiting.insert(p.message_id.clone(), p);
                    }
                },
                None => {
                    callers_open = false;
                    if waiting.is_empty() {
                        return Ok(());
                    }
                }
            },
            status = statuses.message() => {
                let Some(status) = status.context("WatchStatus stream")? else {
                    bail!("the Jobcenter ended the WatchStatus stream");
                };
                let seen = Instant::now();
                match waiting.remove(&status.message_id) {
                    Some(p) => settle(p, &status, seen),
                    None => {
                        early.insert(status.message_id.clone(), (status, seen));
                    }
                }
                if !callers_open && waiting.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// `concurrency` tasks each loop for `duration` (or `per_task` messages): Submit a CertificationRequest at the
/// Jobcenter, then wait until the Jobcenter holds the Jugendamt's verified receipt.
async fn kurzdraht_run(
    client: &AgencyClient,
    watcher_client: &AgencyClient,
    requests: &[pb::SubmitRequest],
    concurrency: usize,
    duration: Duration,
    per_task: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let statuses = watcher_client
        .clone()
        .watch_status(pb::WatchStatusRequest {})
        .await
        .context("WatchStatus at the Jobcenter")?
        .into_inner();
    let watcher = tokio::spawn(watch(statuses, rx));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    if requests.is_empty() {
        bail!("no requests to submit");
    }
    for caller in 0..concurrency {
        let request = requests[caller % requests.len()].clone();
        let (mut client, done, tx) = (client.clone(), done.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && latencies.len() < per_task {
                let started = Instant::now();
                let message_id = client
                    .submit(request.clone())
                    .await?
                    .into_inner()
                    .message_id;
                let (done_tx, done_rx) = oneshot::channel();
                tx.send(Pending {
                    message_id,
                    started,
                    done: done_tx,
                })
                .map_err(|_| anyhow::anyhow!("the status watcher stopped"))?;
                let latency = tokio::time::timeout(Duration::from_secs(60), done_rx)
                    .await
                    .map_err(|_| anyhow::anyhow!("a message was not DELIVERED within 60 s"))?
                    .map_err(|_| anyhow::anyhow!("the status watcher stopped"))??;
                latencies.push(latency);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    drop(tx);
    let tick = ticker(done, start);
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("caller task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    tick.abort();
    let watched = watcher.await.context("status watcher task")?;
    if let Some(e) = failure {
        return Err(e.context("kurzdraht submit → DELIVERED"));
    }
    watched?;
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

/// How the traffic and the link of `bench e2e` look.
struct E2eShape {
    /// Persons the messages are about (one consent each).
    persons: usize,
    /// One-way delay of the link between the two ends (zero: plain loopback).
    link_delay: Duration,
}

/// Starts a delaying forwarder to `upstream` (see [`crate::bench_link`]); returns its address.
async fn delayed_link(
    upstream: std::net::SocketAddr,
    delay: Duration,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(crate::bench_link::forward(
        listener, upstream, delay,
    )));
    Ok(addr)
}

/// The most persons `bench e2e` records consents for.
const MAX_PERSONS: usize = 400;

/// Records the benchmark's consent for `subject` at the Jobcenter (recipient: the
/// Jugendamt, purpose U25); returns its id.
async fn record_bench_consent(
    jc_api: &mut AgencyClient,
    subject: pb::Subject,
) -> anyhow::Result<String> {
    let consent = jc_api
        .record_consent(pb::RecordConsentRequest {
            subject: Some(subject),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![pb::Purpose::U25MoveOut as i32],
            categories: bench_categories(),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Written as i32,
            evidence_sha256: vec![0x5e; 32],
            evidence_reference: BENCH_EVIDENCE.into(),
            recorded_by: "Herr Jensen".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    consent
        .consent
        .map(|c| c.consent_id)
        .context("RecordConsent returned no consent")
}

/// Waits until `client`'s node holds consent `id` in force (up to 15 s).
async fn consent_in_force(client: &mut AgencyClient, id: &str) -> anyhow::Result<()> {
    for _ in 0..750 {
        let consents = kurzdraht_client::all_consents(client).await?;
        if consents.iter().any(|c| {
            c.consent.as_ref().is_some_and(|r| r.consent_id == id)
                && c.state == pb::ConsentState::ConsentInForce as i32
        }) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("consent {id} not in force at the Jugendamt after 15 s")
}

fn fmt_opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".into(), fmt_bytes)
}

async fn e2e(
    seconds: u64,
    concurrency: Vec<usize>,
    payload_bytes: Option<usize>,
    peer_rate: Option<u32>,
    shape: E2eShape,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let E2eShape {
        persons,
        link_delay,
    } = shape;
    if seconds == 0 || concurrency.is_empty() || concurrency.contains(&0) || peer_rate == Some(0) {
        bail!("--seconds, --peer-rate and every --concurrency must be above 0");
    }
    if !(1..=MAX_PERSONS).contains(&persons) {
        bail!("--persons must be 1 to {MAX_PERSONS}");
    }
    let duration = Duration::from_secs(seconds);
    let fed = TempFederation::create(dir, "e2e")?;
    let files_of = |id: &str| fed.files_of(id);
    if let Some(rate) = peer_rate {
        fed.configure(
            JA,
            "[limits]",
            &format!("peer_requests_per_second = {rate}"),
        )?;
    }
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)?;
    if let Some(rate) = peer_rate {
        if ja.limits.peer_requests_per_second != rate {
            bail!("could not set the Jugendamt's limits.peer_requests_per_second to {rate}");
        }
    }
    let jc_client_cfg = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client_cfg = ClientConfig::load(&files_of(JA)?.client_config)?;
    let ticks = clock_ticks();

    println!("kurzdraht bench e2e — baseline (bare tonic call over mutual TLS) vs. the full kurzdraht path");
    print_machine(fed.path());
    println!(
        "parameters: {seconds} s per run, concurrency {}, {WARM_UP} warm-up calls/messages before each run, {persons} persons (one consent each; caller k writes about person k mod {persons})",
        concurrency
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("nodes:      Jobcenter and Jugendamt Kreis Segeberg as two `kurzdraht serve` processes of this binary,");
    println!(
        "            real PKI (pki init), default node.toml{} (log level info to a file; Jugendamt admits {} deliveries/s, {} in flight per peer)",
        if peer_rate.is_some() { " except --peer-rate" } else { "" },
        ja.limits.peer_requests_per_second,
        ja.limits.peer_concurrent_requests
    );
    println!("baseline:   a PeerExchange server in this process that answers Deliver at once with an empty receipt,");
    println!("            served with the Jugendamt's peer TLS config (mutual TLS), called with a client built like the");
    println!("            delivery worker's (Jobcenter's certificate), one shared HTTP/2 channel; latency = call round trip");
    println!("kurzdraht:  Submit (Jobcenter AgencyApi, TLS + token) → consent check → durable outbox → signed envelope →");
    println!("            DeliverBatch (one FIFO worker per delivery lane of the peer — a person's consent chain and messages share a lane —,");
    println!("            up to 256 due messages per batch) → verify, consent check,");
    println!("            durable inbox → receipts under one signature per batch, each verified and stored by the Jobcenter;");
    println!("            one shared HTTP/2 channel for the callers, a second for the WatchStatus stream;");
    println!("            latency = when the WatchStatus stream showed DELIVERED (published after the Jobcenter's flush) − Submit start");
    println!("            each caller waits for DELIVERED before its next Submit (closed loop)");

    // The consent and the request, and a sealed envelope of the same size for the baseline.
    let consent_seed = ids::new_id();
    let reason = match payload_bytes {
        Some(n) => padded_reason(&jc.signing_key, &consent_seed, n),
        None => REASON.to_string(),
    };
    let body = certification_request(reason.clone());

    let mut links = Vec::new();
    if !link_delay.is_zero() {
        // The Jobcenter (and the Jugendamt Norderstedt) reach the Jugendamt through the link.
        let link = delayed_link(ja.peer_addr, link_delay, &mut links).await?;
        let federation = fed.path().join("federation");
        let endpoint = format!("\"https://{}\"", ja.peer_addr);
        let mut named = false;
        pki::update_directory(&federation, |text| {
            named = text.contains(&endpoint);
            text.replace(&endpoint, &format!("\"https://{link}\""))
        })?;
        if !named {
            bail!("{} names no endpoint {endpoint}", federation.display());
        }
    }
    println!(
        "link:       {}",
        if link_delay.is_zero() {
            "plain loopback".to_string()
        } else {
            format!(
                "{} ms one way between Jobcenter and Jugendamt, and between the baseline's ends (a delaying TCP forwarder on loopback)",
                link_delay.as_millis()
            )
        }
    );

    eprintln!("starting the Jobcenter and Jugendamt nodes …");
    let mut jc_proc = ServeProcess::spawn(
        JC,
        &files_of(JC)?.node_config,
        fed.path().join("jobcenter.log"),
    )?;
    let mut ja_proc = ServeProcess::spawn(
        JA,
        &files_of(JA)?.node_config,
        fed.path().join("jugendamt.log"),
    )?;
    let outcome = async {
        let until = Instant::now() + Duration::from_secs(30);
        let mut jc_api = client_until(&jc_client_cfg, until).await?;
        let mut ja_api = client_until(&ja_client_cfg, until).await?;
        jc_proc.check_running()?;
        ja_proc.check_running()?;
        let mut requests = Vec::with_capacity(persons);
        for person in 0..persons {
            let consent_id = record_bench_consent(&mut jc_api, subject_of_person(person)).await?;
            requests.push(pb::SubmitRequest {
                recipient: JA.into(),
                consent_id,
                in_reply_to: String::new(),
                idempotency_key: String::new(),
                body: Some(certification_request_about(
                    subject_of_person(person),
                    reason.clone(),
                )),
            });
        }
        for r in &requests {
            consent_in_force(&mut ja_api, &r.consent_id).await?;
        }
        let consent_id = requests[0].consent_id.clone();
        let sealed = seal_outgoing(
            &jc.signing_key,
            JC,
            MessageKind::CertificationRequest,
            JA,
            &consent_id,
            &body,
            clock::now_ms(),
            jc.delivery.deadline,
        );
        println!(
            "message:    CertificationRequest, payload {} B, signed envelope {} B (the baseline sends an envelope of this size)",
            sealed.envelope.payload.len(),
            envelope_bytes(&sealed)
        );

        // The baseline's bare peer, on its own loopback port with the Jugendamt's TLS.
        let bare_addr = pki::free_loopback_addrs(1)?[0];
        let (bare_stop, bare_stopped) = oneshot::channel::<()>();
        let bare = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .tls_config(kurzdraht_node::tls::peer_server_tls(&ja.tls))?
            .add_service(pb::peer_exchange_server::PeerExchangeServer::new(BarePeer))
            .serve_with_shutdown(bare_addr, async move {
                let _ = bare_stopped.await;
            });
        let bare = tokio::spawn(bare);
        let bare_target = if link_delay.is_zero() {
            bare_addr
        } else {
            delayed_link(bare_addr, link_delay, &mut links).await?
        };
        let bare_client = peer_client(&jc, &format!("https://{bare_target}"))?;

        let procs_node = [
            Watched {
                label: "jobcenter node",
                pid: jc_proc.pid(),
            },
            Watched {
                label: "jugendamt node",
                pid: ja_proc.pid(),
            },
            Watched {
                label: "bench (callers)",
                pid: "self".into(),
            },
        ];
        let procs_bare = [Watched {
            label: "bench (client+server)",
            pid: "self".into(),
        }];
        let mut resettable = true;
        let mut runs = Vec::new();
        let mut retries = Vec::new();
        for &c in &concurrency {
            eprintln!("baseline, concurrency {c}: warm-up, then {seconds} s …");
            let mut warm = bare_client.clone();
            for _ in 0..WARM_UP {
                warm.deliver(sealed.envelope.clone()).await?;
            }
            let meter = UsageMeter::start(&procs_bare, &mut resettable);
            let (elapsed, latencies) =
                baseline_run(&bare_client, &sealed.envelope, c, duration).await?;
            let usage = meter.stop(&procs_bare, ticks);
            let run = E2eRun {
                mode: "baseline",
                concurrency: c,
                elapsed,
                latencies,
                usage,
            };
            eprintln!("    done: {} calls, {:.0}/s", run.latencies.len(), run.rate());
            runs.push(run);

            eprintln!("kurzdraht, concurrency {c}: warm-up, then {seconds} s …");
            let (_, warm) = kurzdraht_run(
                &jc_api,
                &jc_api,
                &requests[..1],
                1,
                Duration::from_secs(60),
                WARM_UP,
            )
            .await?;
            if warm.len() != WARM_UP {
                bail!("warm-up: {} of {WARM_UP} messages delivered", warm.len());
            }
            jc_proc.check_running()?;
            ja_proc.check_running()?;
            // separate channels: the callers' and the watcher's
            let watcher_api = client_until(&jc_client_cfg, Instant::now() + Duration::from_secs(5)).await?;
            let retries_before = jc_proc.count_in_log(RETRY_LOG, "ResourceExhausted");
            let meter = UsageMeter::start(&procs_node, &mut resettable);
            let (elapsed, latencies) =
                kurzdraht_run(&jc_api, &watcher_api, &requests, c, duration, usize::MAX).await?;
            let usage = meter.stop(&procs_node, ticks);
            let retries_after = jc_proc.count_in_log(RETRY_LOG, "ResourceExhausted");
            retries.push((
                c,
                retries_after.0 - retries_before.0,
                retries_after.1 - retries_before.1,
            ));
            let run = E2eRun {
                mode: "kurzdraht",
                concurrency: c,
                elapsed,
                latencies,
                usage,
            };
            eprintln!("    done: {} messages, {:.0}/s", run.latencies.len(), run.rate());
            runs.push(run);
        }
        let _ = bare_stop.send(());
        let _ = bare.await;
        let received = inbox_len(&mut ja_api).await?;
        anyhow::Ok((runs, resettable, received, retries))
    }
    .await;
    for link in links {
        link.abort();
    }
    let stopped_jc = jc_proc.stop().await;
    let stopped_ja = ja_proc.stop().await;
    let (runs, resettable, received, retries) = outcome?;
    stopped_jc?;
    stopped_ja?;

    println!();
    println!(
        "{:<10} {:>5} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}   {:<22} {:>14} {:>10}",
        "mode",
        "conc",
        "messages",
        "seconds",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "process",
        "CPU s/1k msgs",
        "peak RSS"
    );
    for r in &runs {
        let n = r.latencies.len();
        for (i, u) in r.usage.iter().enumerate() {
            let cpu = u.cpu_secs.map_or_else(
                || "n/a".into(),
                |s| format!("{:.3}", s * 1000.0 / n.max(1) as f64),
            );
            let figures = if i == 0 {
                format!(
                    "{:<10} {:>5} {:>8} {:>8.2} {:>9.1} {:>8.2} {:>8.2} {:>9.2}",
                    r.mode,
                    r.concurrency,
                    n,
                    r.elapsed.as_secs_f64(),
                    r.rate(),
                    ms(percentile(&r.latencies, 50.0)),
                    ms(percentile(&r.latencies, 99.0)),
                    ms(percentile(&r.latencies, 99.9)),
                )
            } else {
                format!("{:72}", "")
            };
            println!(
                "{figures}   {:<22} {:>14} {:>10}",
                u.label,
                cpu,
                fmt_opt_bytes(u.peak_rss)
            );
        }
    }
    println!(
        "(peak RSS: VmHWM {}; CPU: utime+stime from /proc/<pid>/stat at {ticks} ticks/s, all threads)",
        if resettable {
            "reset before each run, so each figure is that run's peak"
        } else {
            "could not be reset here, so each figure is the process's peak so far"
        }
    );
    println!();
    println!(
        "{:>5} {:>12} {:>13} {:>16}",
        "conc", "baseline/s", "kurzdraht/s", "kurzdraht/base"
    );
    let mut ratio_at_max = None;
    let mut p99_at_1 = None;
    for &c in &concurrency {
        let find = |m: &str| runs.iter().find(|r| r.mode == m && r.concurrency == c);
        if let (Some(b), Some(k)) = (find("baseline"), find("kurzdraht")) {
            let ratio = k.rate() / b.rate().max(1e-9);
            println!(
                "{c:>5} {:>12.1} {:>13.1} {:>15.2}%",
                b.rate(),
                k.rate(),
                ratio * 100.0
            );
            if c == 128 {
                ratio_at_max = Some(ratio);
            }
            if c == 1 {
                p99_at_1 = Some(ms(percentile(&k.latencies, 99.0)));
            }
        }
    }
    println!();
    let retries: Vec<String> = retries
        .iter()
        .map(|(c, n, rate)| format!("c={c}: {n} ({rate} RESOURCE_EXHAUSTED)"))
        .collect();
    println!(
        "Jobcenter delivery retries during the kurzdraht runs (from its log): {}",
        retries.join(", ")
    );
    println!(
        "  (RESOURCE_EXHAUSTED: refused by the Jugendamt's per-peer admission, limits.peer_requests_per_second = {}, burst one second's worth)",
        ja.limits.peer_requests_per_second
    );
    println!();
    println!("targets of the issue:");
    match ratio_at_max {
        Some(r) => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: {:.2}% — {}",
            r * 100.0,
            if r >= 0.5 { "met" } else { "NOT met" }
        ),
        None => println!(
            "  kurzdraht ≥ 50% of baseline msg/s at concurrency 128: not measured (no run at 128)"
        ),
    }
    match p99_at_1 {
        Some(p) => println!(
            "  kurzdraht p99 < 5 ms at concurrency 1: {p:.2} ms — {}",
            if p < 5.0 { "met" } else { "NOT met" }
        ),
        None => println!("  kurzdraht p99 < 5 ms at concurrency 1: not measured (no run at 1)"),
    }
    let submitted: usize = runs
        .iter()
        .filter(|r| r.mode == "kurzdraht")
        .map(|r| r.latencies.len() + WARM_UP)
        .sum();
    println!(
        "Jugendamt inbox holds {received} messages: {submitted} requests (measured + warm-up) + {persons} consent notices = {} — {}",
        submitted + persons,
        if received == submitted + persons { "as expected" } else { "MISMATCH" }
    );
    println!("load avg:   {} (1/5/15 min, at end)", load_average());
    Ok(ExitCode::SUCCESS)
}
