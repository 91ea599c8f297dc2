//! `kurzdraht-bench footprint`: a node's memory at scale, measured against the target "a
//! node's RSS under 100 MB at 1 million consent records and 1 million stored messages".
//!
//! This module owns the whole measurement:
//! - **the fill**: the Jugendamt Kreis Segeberg's store of a real federation (`pki init`),
//!   opened exactly as its node opens it (`Node::open`: the node's data key, so consents and
//!   inbox are sealed at rest, and the node's store options), written through
//!   `Ledger::accept_deliveries` as reception stores a delivered batch: first N consents, each
//!   arriving as the Jobcenter's signed ConsentNotice (an inbox record, and the replicated
//!   consent keeping that notice as proof), then M CertificationRequests citing them, each a
//!   sealed envelope with the Jugendamt's batch receipt — 256 envelopes per transaction (a
//!   full DeliverBatch), with their audit entries, and one flush at the end;
//! - **the run**: the Jobcenter (empty store, the peer) and the Jugendamt as `kurzdraht serve`
//!   processes. Once the Jugendamt answers it stays idle for `--idle-seconds` and until it is
//!   quiet (its start-up work shows there), then IT-system clients drive a light mix: GetConsentEvidence by stored consent
//!   and by stored message, the tail of the inbox, Acknowledge, and Submit of
//!   MoveOutCertifications to the Jobcenter (under a consent recorded live) with GetStatus;
//! - **the readings**: VmRSS and VmHWM of the serve process (/proc/<pid>/status) at its first
//!   answer, after idling and after the load (VmHWM reset before the load where the kernel
//!   allows), RSS sampled over time, CPU time, and the Jobcenter's figures as an empty-store
//!   baseline;
//! - **the tables and the verdict** against the target.
//!
//! Helpers shared with the other benchmarks (machine, formatting, sealing, `ServeProcess`,
//! /proc readings) live in `common.rs`.

use crate::common::{self as bench, JA, JC};
use anyhow::{bail, Context};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_envelope::{ids, sign_receipt, sign_receipt_batch, SigningKey};
use kurzdraht_ledger::{Accepted, ConsentEffect, InboxRecord, Outgoing};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::{clock, Node};
use kurzdraht_proto::v1::{
    self as pb, get_consent_evidence_request::About, message_body::Body, MessageKind,
};
use kurzdraht_testkit::ServeProcess;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The target of the issue: a node's resident memory, in bytes (100 MB).
const TARGET_BYTES: u64 = 100_000_000;
/// Envelopes per stored batch: the most a delivery worker sends in one DeliverBatch.
const FILL_BATCH: usize = 256;
/// Batches the sealing thread may run ahead of the writer.
const FILL_QUEUE: usize = 8;
/// How many stored ids of each kind the load picks from, spread evenly over the store.
const SAMPLE: usize = 4096;
/// How often the serve process's RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The fill spreads the records' times over this past period.
const HISTORY_MS: i64 = 365 * clock::DAY_MS;
/// A batch arrives this long after its newest envelope was sealed.
const TRANSIT_MS: i64 = 40;
/// How long the run waits for a node to answer and to become quiet after its start, and for
/// the live consent to arrive.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// A node counts as quiet below this share of one core over [`QUIET_WINDOW`].
const QUIET_CPU: f64 = 0.1;
const QUIET_WINDOW: Duration = Duration::from_millis(500);

/// What `kurzdraht-bench footprint` was asked for.
pub(crate) struct Params {
    pub consents: usize,
    pub messages: usize,
    pub load: Duration,
    pub idle: Duration,
    pub callers: usize,
    /// `[storage] cache_mb` for the Jugendamt's node.toml; `None` keeps the default.
    pub cache_mb: Option<u64>,
    pub dir: Option<PathBuf>,
}

pub(crate) async fn run(p: Params) -> anyhow::Result<ExitCode> {
    if p.consents == 0 || p.load.is_zero() || p.callers == 0 {
        bail!("--consents, --seconds and --callers must be above 0");
    }
    let fed = bench::TempFederation::create(p.dir.clone(), "footprint")?;
    let files_of = |id: &str| fed.files_of(id);
    if let Some(mb) = p.cache_mb {
        fed.configure(JA, "[storage]", &format!("cache_mb = {mb}"))?;
    }
    let jc = NodeConfig::load(&files_of(JC)?.node_config)?;
    let ja = NodeConfig::load(&files_of(JA)?.node_config)
        .context("loading the Jugendamt's node.toml")?;
    let jc_client = ClientConfig::load(&files_of(JC)?.client_config)?;
    let ja_client = ClientConfig::load(&files_of(JA)?.client_config)?;

    println!(
        "kurzdraht-bench footprint — a node's memory with a large store, against RSS < 100 MB"
    );
    bench::print_machine(fed.path());
    println!(
        "parameters: {} consents, {} messages, {} s idle, then {} s of load by {} caller(s)",
        thousands(p.consents),
        thousands(p.messages),
        p.idle.as_secs(),
        p.load.as_secs(),
        p.callers
    );
    println!(
        "page cache: {}",
        p.cache_mb.map_or_else(
            || "the node.toml default ([storage] cache_mb not set)".into(),
            |mb| format!("[storage] cache_mb = {mb} in the Jugendamt's node.toml (--cache-mb)")
        )
    );
    println!("store:      the Jugendamt's, opened as its node opens it (Node::open: data key, store options), filled");
    println!("            through Ledger::accept_deliveries as reception stores a DeliverBatch ({FILL_BATCH} envelopes, one");
    println!("            batch receipt signature, their audit entries, one transaction); one flush at the end");
    println!("            consents: each the Jobcenter's signed ConsentNotice (inbox) + the replicated consent with it");
    println!("            messages: sealed CertificationRequests citing those consents, with the Jugendamt's receipts");
    println!("node:       `kurzdraht serve` of this binary on that store, default node.toml of `pki init`;");
    println!(
        "            the Jobcenter (empty store) as its peer, also a `kurzdraht serve` process"
    );

    eprintln!(
        "filling the Jugendamt's store in {} …",
        ja.data_dir.display()
    );
    let filled = fill(&ja, &jc, p.consents, p.messages).await?;

    eprintln!("starting the Jobcenter and the Jugendamt nodes …");
    let mut jc_proc = ServeProcess::spawn(
        JC,
        &files_of(JC)?.node_config,
        fed.path().join("jobcenter.log"),
    )?;
    let spawned = Instant::now();
    let mut ja_proc = ServeProcess::spawn(
        JA,
        &files_of(JA)?.node_config,
        fed.path().join("jugendamt.log"),
    )?;
    let outcome = measure(
        &p,
        &filled,
        &jc_client,
        &ja_client,
        &mut jc_proc,
        &mut ja_proc,
        spawned,
    )
    .await;
    let stopped_ja = ja_proc.stop().await;
    let stopped_jc = jc_proc.stop().await;
    let measured = outcome?;
    report(&filled, &measured);
    println!("load avg:   {} (1/5/15 min, at end)", bench::load_average());
    stopped_ja.context("stopping the Jugendamt node")?;
    stopped_jc.context("stopping the Jobcenter node")?;
    if measured.undelivered > 0 {
        println!(
            "NOT every submitted message was DELIVERED: {} of {} still not",
            measured.undelivered, measured.submitted
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- test data

const GIVEN: [&str; 16] = [
    "Lena", "Finn", "Mia", "Jonas", "Lea", "Luca", "Emma", "Paul", "Hannah", "Ben", "Sophie",
    "Elias", "Marie", "Noah", "Lina", "Felix",
];
const FAMILY: [&str; 16] = [
    "Hansen",
    "Petersen",
    "Jensen",
    "Schmidt",
    "Möller",
    "Schulz",
    "Thomsen",
    "Lange",
    "Meyer",
    "Nissen",
    "Carstensen",
    "Wulf",
    "Koch",
    "Brandt",
    "Voss",
    "Lorenzen",
];
const STREETS: [&str; 8] = [
    "Kurhausstraße",
    "Hamburger Straße",
    "Kirchstraße",
    "Lübecker Straße",
    "Ulzburger Straße",
    "Segeberger Chaussee",
    "Rathausallee",
    "Ohechaussee",
];
const PLACES: [(&str, &str); 4] = [
    ("23795", "Bad Segeberg"),
    ("22846", "Norderstedt"),
    ("24568", "Kaltenkirchen"),
    ("24576", "Bad Bramstedt"),
];
const CASEWORKERS: [&str; 4] = ["Herr Jensen", "Frau Sievers", "Frau Ahrens", "Herr Lüthje"];

/// Person `i`: 18 to 24 years old in `year`, with an address and the Jobcenter's case number.
fn subject(i: usize, year: i32) -> pb::Subject {
    let (postal_code, city) = PLACES[i % PLACES.len()];
    pb::Subject {
        given_name: GIVEN[i % GIVEN.len()].into(),
        family_name: FAMILY[(i / GIVEN.len()) % FAMILY.len()].into(),
        date_of_birth: format!(
            "{:04}-{:02}-{:02}",
            year - 19 - (i % 6) as i32,
            1 + i % 12,
            1 + (i / 12) % 28
        ),
        address: Some(pb::Address {
            street: format!("{} {}", STREETS[(i / 7) % STREETS.len()], 1 + i % 120),
            postal_code: postal_code.into(),
            city: city.into(),
        }),
        case_references: vec![pb::CaseReference {
            agency: JC.into(),
            reference: format!("JC-SE-U25-{i:07}"),
        }],
    }
}

/// What a consent for the move-out procedure covers; the Jugendamt's certification carries
/// the family situation.
fn categories() -> Vec<i32> {
    [
        pb::DataCategory::Identity,
        pb::DataCategory::Address,
        pb::DataCategory::CaseReferences,
        pb::DataCategory::HousingSituation,
        pb::DataCategory::FamilySituation,
    ]
    .map(|c| c as i32)
    .to_vec()
}

/// Consent `i` as the Jobcenter records it at `at_ms` (valid for two years).
fn consent_record(i: usize, at_ms: i64, year: i32) -> pb::ConsentRecord {
    let mut evidence = [0u8; 32];
    evidence[..8].copy_from_slice(&Rng(i as u64).next().to_be_bytes());
    evidence[8..16].copy_from_slice(&Rng(!(i as u64)).next().to_be_bytes());
    pb::ConsentRecord {
        consent_id: ids::new_id(),
        subject: Some(subject(i, year)),
        given_by: pb::ConsentGiver::Person as i32,
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![pb::Purpose::U25MoveOut as i32],
        valid_from_ms: at_ms,
        valid_until_ms: at_ms + 2 * 365 * clock::DAY_MS,
        evidence_reference: format!("JC-SE/Einwilligung/{}/{i:07}", year - 1),
        recorded_by: CASEWORKERS[i % CASEWORKERS.len()].into(),
        recorded_at_ms: at_ms,
        categories: categories(),
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: evidence.to_vec(),
        ..Default::default()
    }
}

fn certification_request(subject: pb::Subject, respond_by: String, i: usize) -> pb::MessageBody {
    pb::MessageBody {
        body: Some(Body::CertificationRequest(pb::CertificationRequest {
            subject: Some(subject),
            reason: bench::REASON.into(),
            respond_by,
            caseworker: CASEWORKERS[i % CASEWORKERS.len()].into(),
        })),
    }
}

fn move_out_certification(subject: pb::Subject, today: String) -> pb::MessageBody {
    pb::MessageBody {
        body: Some(Body::MoveOutCertification(pb::MoveOutCertification {
            subject: Some(subject),
            outcome: pb::CertificationOutcome::Supported as i32,
            ground: pb::MoveOutGround::SeriousSocialReasons as i32,
            statement: "Rückverweis in das Elternhaus nicht zumutbar; Auszug aus schwerwiegenden sozialen Gründen erforderlich.".into(),
            interview_date: today,
            issuing_caseworker: "Frau Sievers".into(),
            health_note: String::new(),
        })),
    }
}

/// SplitMix64: reproducible picks without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn this_year() -> i32 {
    clock::date_of_ms(clock::now_ms())
        .map(|d| d.year())
        .unwrap_or(2026)
}

fn today() -> String {
    clock::date_of_ms(clock::now_ms())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the fill

/// One DeliverBatch as the Jugendamt stores it: records with their receipts, and effects.
struct Batch {
    items: Vec<(InboxRecord, ConsentEffect)>,
    received_at_ms: i64,
    consents: bool,
}

/// Seals the envelopes on its own thread, so that sealing and writing overlap.
struct Source {
    jc_key: SigningKey,
    ja_key: SigningKey,
    consents: usize,
    messages: usize,
    deadline: Duration,
    start_ms: i64,
    year: i32,
}

/// What the sealing thread kept: ids for the load, one envelope size of each kind.
#[derive(Default)]
struct Produced {
    consent_sample: Vec<String>,
    message_sample: Vec<String>,
    notice_bytes: usize,
    request_bytes: usize,
}

impl Source {
    /// When record `i` of `n` was sealed: spread evenly over the past [`HISTORY_MS`].
    fn at(&self, i: usize, n: usize) -> i64 {
        self.start_ms + (i128::from(HISTORY_MS) * i as i128 / n.max(1) as i128) as i64
    }

    /// Received as the node stores an accepted envelope (the receipt follows per batch).
    fn received(out: Outgoing, kind: MessageKind) -> InboxRecord {
        InboxRecord {
            message_id: out.message_id,
            sender: JC.into(),
            kind: kind as i32,
            envelope_sha256: out.envelope_sha256.to_vec(),
            envelope: Some(out.envelope),
            created_at_ms: out.submitted_at_ms,
            consent_id: out.consent_id,
            ..Default::default()
        }
    }

    /// Signs the batch's receipts as reception does (one alone, more under one signature)
    /// and hands it to the writer; false once the writer is gone.
    fn send(
        &self,
        items: &mut Vec<(InboxRecord, ConsentEffect)>,
        consents: bool,
        tx: &SyncSender<Batch>,
    ) -> bool {
        if items.is_empty() {
            return true;
        }
        let received_at_ms = items
            .iter()
            .map(|(r, _)| r.created_at_ms)
            .max()
            .unwrap_or_default()
            + TRANSIT_MS;
        let receipts: Vec<pb::Receipt> = items
            .iter()
            .map(|(r, _)| pb::Receipt {
                message_id: r.message_id.clone(),
                envelope_sha256: r.envelope_sha256.clone(),
                sender: JC.into(),
                receiver: JA.into(),
                received_at_ms,
            })
            .collect();
        let signed = match receipts.as_slice() {
            [one] => vec![sign_receipt(one, &self.ja_key)],
            many => sign_receipt_batch(many, JC, JA, received_at_ms, &self.ja_key),
        };
        let mut items = std::mem::replace(items, Vec::with_capacity(FILL_BATCH));
        for ((record, _), receipt) in items.iter_mut().zip(signed) {
            record.received_at_ms = received_at_ms;
            record.receipt = Some(receipt);
        }
        tx.send(Batch {
            items,
            received_at_ms,
            consents,
        })
        .is_ok()
    }

    fn run(self, tx: SyncSender<Batch>) -> Produced {
        let mut produced = Produced::default();
        let mut items = Vec::with_capacity(FILL_BATCH);
        let mut consent_ids = Vec::with_capacity(self.consents);
        let every = (self.consents / SAMPLE).max(1);
        for i in 0..self.consents {
            let at = self.at(i, self.consents);
            let record = consent_record(i, at, self.year);
            let body = pb::MessageBody {
                body: Some(Body::ConsentNotice(pb::ConsentNotice {
                    consent: Some(record.clone()),
                })),
            };
            let out = bench::seal_outgoing(
                &self.jc_key,
                JC,
                MessageKind::ConsentNotice,
                JA,
                &record.consent_id,
                &body,
                at,
                self.deadline,
            );
            produced.notice_bytes = bench::envelope_bytes(&out);
            if i % every == 0 && produced.consent_sample.len() < SAMPLE {
                produced.consent_sample.push(record.consent_id.clone());
            }
            consent_ids.push(record.consent_id.clone());
            items.push((
                Self::received(out, MessageKind::ConsentNotice),
                ConsentEffect::Record(record),
            ));
            if items.len() == FILL_BATCH && !self.send(&mut items, true, &tx) {
                return produced;
            }
        }
        if !self.send(&mut items, true, &tx) {
            return produced;
        }
        let mut rng = Rng(0x5e6e_be26);
        let every = (self.messages / SAMPLE).max(1);
        for k in 0..self.messages {
            let at = self.at(k, self.messages);
            let c = rng.below(self.consents);
            let respond_by = clock::date_of_ms(at + 14 * clock::DAY_MS)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let body = certification_request(subject(c, self.year), respond_by, k);
            let out = bench::seal_outgoing(
                &self.jc_key,
                JC,
                MessageKind::CertificationRequest,
                JA,
                &consent_ids[c],
                &body,
                at,
                self.deadline,
            );
            produced.request_bytes = bench::envelope_bytes(&out);
            if k % every == 0 && produced.message_sample.len() < SAMPLE {
                produced.message_sample.push(out.message_id.clone());
            }
            items.push((
                Self::received(out, MessageKind::CertificationRequest),
                ConsentEffect::None,
            ));
            if items.len() == FILL_BATCH && !self.send(&mut items, false, &tx) {
                return produced;
            }
        }
        self.send(&mut items, false, &tx);
        produced
    }
}

/// The filled store.
struct Filled {
    consents: usize,
    messages: usize,
    consents_time: Duration,
    messages_time: Duration,
    flush: Duration,
    total: Duration,
    size_on_disk: u64,
    files: u64,
    produced: Produced,
}

impl Filled {
    fn records(&self) -> usize {
        self.consents + self.messages
    }
}

/// Prints progress at every tenth of the records.
struct Progress {
    total: usize,
    done: usize,
    next: usize,
    started: Instant,
    last: (usize, Instant),
}

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
            done: 0,
            next: total.div_ceil(10),
            started: now,
            last: (0, now),
        }
    }

    fn add(&mut self, n: usize, what: &str) {
        self.done += n;
        if self.done < self.next && self.done < self.total {
            return;
        }
        let now = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let recent = (self.done - self.last.0) as f64
            / now.duration_since(self.last.1).as_secs_f64().max(1e-9);
        eprintln!(
            "  {:>3}%  {} / {} records ({what}), {secs:.1} s, {:.0}/s overall, {recent:.0}/s lately",
            self.done * 100 / self.total.max(1),
            thousands(self.done),
            thousands(self.total),
            self.done as f64 / secs
        );
        self.last = (self.done, now);
        while self.next <= self.done {
            self.next += self.total.div_ceil(10).max(1);
        }
    }
}

/// Fills the Jugendamt's store: `consents` replicated consents, then `messages` received
/// CertificationRequests, as reception stores delivered batches; one flush at the end.
async fn fill(
    ja: &NodeConfig,
    jc: &NodeConfig,
    consents: usize,
    messages: usize,
) -> anyhow::Result<Filled> {
    let node = Node::open(ja).context("opening the Jugendamt's store as its node does")?;
    let ledger = node.ledger().clone();
    let source = Source {
        jc_key: jc.signing_key.clone(),
        ja_key: ja.signing_key.clone(),
        consents,
        messages,
        deadline: jc.delivery.deadline,
        start_ms: clock::now_ms() - HISTORY_MS,
        year: this_year(),
    };
    let started = Instant::now();
    let writer = ledger.clone();
    let written = tokio::task::spawn_blocking(move || {
        let (tx, rx) = sync_channel::<Batch>(FILL_QUEUE);
        let sealer = std::thread::Builder::new()
            .name("footprint-seal".into())
            .spawn(move || source.run(tx))
            .context("starting the sealing thread")?;
        let mut progress = Progress::new(consents + messages);
        let mut consents_done = None;
        for batch in rx {
            if !batch.consents && consents_done.is_none() {
                consents_done = Some(started.elapsed());
            }
            let stored = writer.accept_deliveries(&batch.items, batch.received_at_ms)?;
            if stored.len() != batch.items.len()
                || stored.iter().any(|a| !matches!(a, Accepted::Stored { .. }))
            {
                bail!("the store took a filled envelope as a duplicate");
            }
            let what = if batch.consents {
                "consents"
            } else {
                "messages"
            };
            progress.add(batch.items.len(), what);
        }
        let produced = sealer
            .join()
            .map_err(|_| anyhow::anyhow!("the sealing thread panicked"))?;
        anyhow::Ok((produced, consents_done.unwrap_or_else(|| started.elapsed())))
    })
    .await
    .context("the fill task")??;
    let (produced, consents_time) = written;
    let written_at = started.elapsed();
    let t = Instant::now();
    ledger.flush().await?;
    let flush = t.elapsed();
    let total = started.elapsed();
    let size_on_disk = ledger.size_on_disk()?;
    drop(ledger);
    drop(node);
    let files = crate::restart::dir_bytes(&ja.data_dir);
    eprintln!(
        "  filled in {:.1} s (final flush {})",
        total.as_secs_f64(),
        bench::fmt_duration(flush)
    );
    Ok(Filled {
        consents,
        messages,
        consents_time,
        messages_time: written_at.saturating_sub(consents_time),
        flush,
        total,
        size_on_disk,
        files,
        produced,
    })
}

// ---------------------------------------------------------------- the run

/// VmRSS and VmHWM of a process at one moment.
#[derive(Clone, Copy, Default)]
struct Reading {
    rss: Option<u64>,
    hwm: Option<u64>,
    cpu_secs: Option<f64>,
}

impl Reading {
    fn of(pid: &str, ticks: f64) -> Self {
        Self {
            rss: bench::proc_status_bytes(pid, "VmRSS"),
            hwm: bench::peak_rss(pid),
            cpu_secs: bench::cpu_ticks(pid).map(|t| t as f64 / ticks),
        }
    }
}

/// Samples a process's VmRSS every [`SAMPLE_EVERY`] until stopped.
struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(Duration, u64)>>,
}

impl Sampler {
    fn start(pid: String, t0: Instant) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Some(rss) = bench::proc_status_bytes(&pid, "VmRSS") {
                    samples.push((t0.elapsed(), rss));
                }
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = &mut stopped => return samples,
                }
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<(Duration, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The load's calls, by kind.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    EvidenceByConsent,
    EvidenceByMessage,
    GetStatus,
    InboxTail,
    Acknowledge,
    Submit,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::EvidenceByConsent => "GetConsentEvidence (stored consent)",
            Op::EvidenceByMessage => "GetConsentEvidence (stored message)",
            Op::GetStatus => "GetStatus (own submitted message)",
            Op::InboxTail => "ReadInbox (last 10 items)",
            Op::Acknowledge => "Acknowledge (stored message)",
            Op::Submit => "Submit MoveOutCertification → Jobcenter",
        }
    }
}

/// One caller's round: mostly reads of stored records, some writes, one submission.
const MIX: [Op; 10] = [
    Op::EvidenceByConsent,
    Op::EvidenceByMessage,
    Op::GetStatus,
    Op::EvidenceByConsent,
    Op::InboxTail,
    Op::EvidenceByMessage,
    Op::Acknowledge,
    Op::EvidenceByConsent,
    Op::Submit,
    Op::GetStatus,
];

/// What one run measured.
struct Measured {
    answering_after: Duration,
    at_answer: Reading,
    /// How long the node was left idle: at least `--idle-seconds`, and until it was quiet.
    idle_for: Duration,
    after_idle: Reading,
    /// Whether VmHWM could be reset before the load (else it is the peak since start).
    reset: bool,
    after_load: Reading,
    peer: Reading,
    load_elapsed: Duration,
    /// Latencies by call kind, sorted.
    calls: BTreeMap<Op, Vec<Duration>>,
    submitted: usize,
    undelivered: usize,
    samples: Vec<(Duration, u64)>,
    /// When the idle phase and the load began, after the Jugendamt was started.
    load_from: Duration,
    load_to: Duration,
}

/// Connects once the node answers a call (GetStatus of an unknown id: NOT_FOUND), which it
/// does only after it opened its store.
async fn answering(
    config: &ClientConfig,
    node: &mut ServeProcess,
    until: Instant,
) -> anyhow::Result<AgencyClient> {
    let probe = pb::GetStatusRequest {
        message_id: ids::new_id(),
    };
    loop {
        node.check_running()?;
        if Instant::now() >= until {
            bail!(
                "the node did not answer within {} s",
                START_TIMEOUT.as_secs()
            );
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = connect(config).await?;
            match client.get_status(probe.clone()).await {
                Ok(_) => Ok(client),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(client),
                Err(s) => Err(anyhow::Error::from(s)),
            }
        })
        .await;
        match attempt {
            Ok(Ok(client)) => return Ok(client),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn measure(
    p: &Params,
    filled: &Filled,
    jc_client: &ClientConfig,
    ja_client: &ClientConfig,
    jc_proc: &mut ServeProcess,
    ja_proc: &mut ServeProcess,
    spawned: Instant,
) -> anyhow::Result<Measured> {
    let ticks = bench::clock_ticks();
    let pid = ja_proc.pid();
    let sampler = Sampler::start(pid.clone(), spawned);
    let until = spawned + START_TIMEOUT;
    let ja_api = answering(ja_client, ja_proc, until).await?;
    let answering_after = spawned.elapsed();
    let at_answer = Reading::of(&pid, ticks);
    eprintln!(
        "  the Jugendamt answers after {:.2} s (RSS {}); idle for {} s …",
        answering_after.as_secs_f64(),
        opt_bytes(at_answer.rss),
        p.idle.as_secs()
    );
    let mut jc_api = answering(jc_client, jc_proc, until).await?;
    tokio::time::sleep(p.idle.saturating_sub(spawned.elapsed() - answering_after)).await;
    quiet(ja_proc, ticks, until).await?;
    let idle_for = spawned.elapsed() - answering_after;
    let after_idle = Reading::of(&pid, ticks);
    eprintln!(
        "  quiet after {:.1} s idle (RSS {}, CPU {})",
        idle_for.as_secs_f64(),
        opt_bytes(after_idle.rss),
        opt_secs(after_idle.cpu_secs)
    );

    // A consent recorded live at the Jobcenter, so that the Jugendamt's submissions pass the
    // Jobcenter's own consent check too; it reaches the Jugendamt as a ConsentNotice.
    let person = subject(filled.consents, this_year());
    let consent_id = jc_api
        .record_consent(pb::RecordConsentRequest {
            subject: Some(person.clone()),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![pb::Purpose::U25MoveOut as i32],
            categories: categories(),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Written as i32,
            evidence_sha256: vec![0x5e; 32],
            evidence_reference: "JC-SE/Einwilligung/live".into(),
            recorded_by: "Herr Jensen".into(),
            ..Default::default()
        })
        .await
        .context("RecordConsent at the Jobcenter")?
        .into_inner()
        .consent
        .map(|c| c.consent_id)
        .context("RecordConsent returned no consent")?;
    let reset = bench::reset_peak_rss(&pid);
    let load_from = spawned.elapsed();
    eprintln!(
        "  load: {} caller(s) for {} s …",
        p.callers,
        p.load.as_secs()
    );
    let mut ja_probe = ja_api.clone();
    consent_arrived(&mut ja_probe, &consent_id, Instant::now() + START_TIMEOUT).await?;
    let submit = pb::SubmitRequest {
        recipient: JC.into(),
        consent_id,
        in_reply_to: String::new(),
        body: Some(move_out_certification(person, today())),
        idempotency_key: String::new(),
    };
    let (load_elapsed, calls, submitted_ids) = load(
        &ja_api,
        &filled.produced,
        filled.records() as u64,
        &submit,
        p.callers,
        p.load,
    )
    .await?;
    let load_to = spawned.elapsed();
    ja_proc.check_running()?;
    let after_load = Reading::of(&pid, ticks);
    let peer = Reading::of(&jc_proc.pid(), ticks);
    let undelivered = undelivered(&ja_api, &submitted_ids).await?;
    let samples = sampler.finish().await;
    Ok(Measured {
        answering_after,
        at_answer,
        idle_for,
        after_idle,
        reset,
        after_load,
        peer,
        load_elapsed,
        calls,
        submitted: submitted_ids.len(),
        undelivered,
        samples,
        load_from,
        load_to,
    })
}

/// Waits until the node uses less than [`QUIET_CPU`] of a core over [`QUIET_WINDOW`]: its
/// start-up work (e.g. the first retention sweep) is done.
async fn quiet(node: &mut ServeProcess, ticks: f64, until: Instant) -> anyhow::Result<()> {
    let pid = node.pid();
    let mut before = bench::cpu_ticks(&pid);
    loop {
        tokio::time::sleep(QUIET_WINDOW).await;
        node.check_running()?;
        let now = bench::cpu_ticks(&pid);
        let busy = match (before, now) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / ticks,
            _ => return Ok(()), // no /proc here: nothing to wait for
        };
        if busy < QUIET_CPU * QUIET_WINDOW.as_secs_f64() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "the node was still busy {} s after its start",
                START_TIMEOUT.as_secs()
            );
        }
        before = now;
    }
}

/// Waits until the Jugendamt holds consent `id` (its notice arrived).
async fn consent_arrived(
    client: &mut AgencyClient,
    id: &str,
    until: Instant,
) -> anyhow::Result<()> {
    let req = pb::GetConsentEvidenceRequest {
        about: Some(About::ConsentId(id.to_string())),
    };
    loop {
        match client.get_consent_evidence(req.clone()).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => {
                return Err(anyhow::Error::from(s).context("the live consent at the Jugendamt"))
            }
        }
    }
}

type LoadResult = (Duration, BTreeMap<Op, Vec<Duration>>, Vec<String>);

/// `callers` IT-system clients, each looping through [`MIX`] until `duration` is over.
async fn load(
    client: &AgencyClient,
    produced: &Produced,
    inbox_len: u64,
    submit: &pb::SubmitRequest,
    callers: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let consents = Arc::new(produced.consent_sample.clone());
    let messages = Arc::new(produced.message_sample.clone());
    let submitted = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let (mut client, consents, messages, submitted, submit) = (
            client.clone(),
            consents.clone(),
            messages.clone(),
            submitted.clone(),
            submit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xf00d + caller as u64);
            let mut calls: Vec<(Op, Duration)> = Vec::new();
            let mut step = caller;
            while Instant::now() < deadline {
                let op = MIX[step % MIX.len()];
                step += 1;
                let t = Instant::now();
                match op {
                    Op::EvidenceByConsent | Op::EvidenceByMessage => {
                        let about = if op == Op::EvidenceByConsent {
                            About::ConsentId(consents[rng.below(consents.len())].clone())
                        } else if messages.is_empty() {
                            continue;
                        } else {
                            About::MessageId(messages[rng.below(messages.len())].clone())
                        };
                        let evidence = client
                            .get_consent_evidence(pb::GetConsentEvidenceRequest {
                                about: Some(about),
                            })
                            .await?
                            .into_inner();
                        if !evidence.signature_verified || evidence.consent.is_none() {
                            bail!("consent evidence without a verified notice");
                        }
                    }
                    Op::GetStatus => {
                        let id = {
                            let ids = submitted
                                .lock()
                                .map_err(|_| anyhow::anyhow!("a caller panicked"))?;
                            if ids.is_empty() {
                                continue;
                            }
                            ids[rng.below(ids.len())].clone()
                        };
                        client
                            .get_status(pb::GetStatusRequest { message_id: id })
                            .await?;
                    }
                    Op::InboxTail => {
                        let mut stream = client
                            .read_inbox(pb::ReadInboxRequest {
                                after_seq: inbox_len.saturating_sub(10),
                                follow: false,
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        while stream.message().await?.is_some() {}
                    }
                    Op::Acknowledge => {
                        if messages.is_empty() {
                            continue;
                        }
                        client
                            .acknowledge(pb::AcknowledgeRequest {
                                message_id: messages[rng.below(messages.len())].clone(),
                            })
                            .await?;
                    }
                    Op::Submit => {
                        let id = client.submit(submit.clone()).await?.into_inner().message_id;
                        submitted
                            .lock()
                            .map_err(|_| anyhow::anyhow!("a caller panicked"))?
                            .push(id);
                    }
                }
                calls.push((op, t.elapsed()));
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(done)) => {
                for (op, d) in done {
                    calls.entry(op).or_default().push(d);
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("caller task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = failure {
        return Err(e.context("the load on the Jugendamt"));
    }
    for l in calls.values_mut() {
        l.sort_unstable();
    }
    let ids = submitted
        .lock()
        .map_err(|_| anyhow::anyhow!("a caller panicked"))?
        .clone();
    Ok((elapsed, calls, ids))
}

/// How many of the submitted messages are not DELIVERED within 30 s.
async fn undelivered(client: &AgencyClient, ids: &[String]) -> anyhow::Result<usize> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut client = client.clone();
    let mut left = 0;
    for id in ids {
        loop {
            let status = client
                .get_status(pb::GetStatusRequest {
                    message_id: id.clone(),
                })
                .await?
                .into_inner();
            if status.state == pb::DeliveryState::Delivered as i32 {
                break;
            }
            if status.state != pb::DeliveryState::Queued as i32 || Instant::now() >= until {
                left += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(left)
}

// ---------------------------------------------------------------- the tables

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".into(), bench::fmt_bytes)
}

fn opt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".into(), |s| format!("{s:.2} s"))
}

fn row(label: &str, value: String) {
    println!("  {label:<50} {value}");
}

fn report(f: &Filled, m: &Measured) {
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let inbox = f.records();
    let audit = 2 * f.consents + f.messages;
    println!();
    println!("store of the Jugendamt (filled directly, sealed at rest with the node's data key)");
    row(
        "consents (replicated, each with its signed notice)",
        thousands(f.consents),
    );
    row(
        "received CertificationRequests (with receipts)",
        thousands(f.messages),
    );
    row(
        "inbox records (the notices and the requests)",
        thousands(inbox),
    );
    row("audit entries the fill wrote", thousands(audit));
    row(
        "envelope: ConsentNotice / CertificationRequest",
        format!(
            "{} B / {} B",
            f.produced.notice_bytes, f.produced.request_bytes
        ),
    );
    row(
        "fill time (seal + store, one flush)",
        format!(
            "{:.1} s — consents {:.1} s ({:.0}/s), messages {:.1} s ({:.0}/s), flush {}",
            f.total.as_secs_f64(),
            f.consents_time.as_secs_f64(),
            rate(f.consents, f.consents_time),
            f.messages_time.as_secs_f64(),
            rate(f.messages, f.messages_time),
            bench::fmt_duration(f.flush)
        ),
    );
    row(
        "store size: sled size_on_disk / files",
        format!(
            "{} / {}",
            bench::fmt_bytes(f.size_on_disk),
            bench::fmt_bytes(f.files)
        ),
    );

    println!();
    println!(
        "{:<70} {:>11} {:>11} {:>10}",
        "memory of the `kurzdraht serve` processes", "VmRSS", "VmHWM", "CPU"
    );
    let line = |label: String, r: &Reading| {
        println!(
            "  {label:<68} {:>11} {:>11} {:>10}",
            opt_bytes(r.rss),
            opt_bytes(r.hwm),
            opt_secs(r.cpu_secs)
        );
    };
    line(
        format!(
            "Jugendamt, at its first answer ({:.2} s after start)",
            m.answering_after.as_secs_f64()
        ),
        &m.at_answer,
    );
    line(
        format!(
            "Jugendamt, quiet after {:.1} s idle (HWM: the start-up peak)",
            m.idle_for.as_secs_f64()
        ),
        &m.after_idle,
    );
    let ncalls: usize = m.calls.values().map(Vec::len).sum();
    line(
        format!(
            "Jugendamt, after {:.1} s of load, {} calls (HWM: {})",
            m.load_elapsed.as_secs_f64(),
            thousands(ncalls),
            if m.reset {
                "peak under load"
            } else {
                "peak since start"
            }
        ),
        &m.after_load,
    );
    line(
        "Jobcenter (the peer, empty store), at the end".into(),
        &m.peer,
    );
    println!(
        "  (CPU: utime + stime since the process started; VmHWM reset before the load: {})",
        if m.reset { "yes" } else { "not allowed here" }
    );

    let in_phase = |from: Duration, to: Duration| {
        m.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, b)| *b)
            .max()
    };
    println!(
        "  RSS sampled every {} ms: highest before the load {}, during the load {}",
        SAMPLE_EVERY.as_millis(),
        opt_bytes(in_phase(Duration::ZERO, m.load_from)),
        opt_bytes(in_phase(m.load_from, m.load_to))
    );
    println!(
        "  RSS over time (s after start: MiB): {}",
        timeline(&m.samples)
    );

    println!();
    println!(
        "{:<44} {:>8} {:>9} {:>9} {:>9}",
        "load on the Jugendamt", "calls", "calls/s", "p50 ms", "p99 ms"
    );
    for (op, l) in &m.calls {
        println!(
            "  {:<42} {:>8} {:>9.1} {:>9.2} {:>9.2}",
            op.label(),
            thousands(l.len()),
            rate(l.len(), m.load_elapsed),
            bench::ms(bench::percentile(l, 50.0)),
            bench::ms(bench::percentile(l, 99.0))
        );
    }
    println!(
        "  submitted messages DELIVERED to the Jobcenter: {} of {}",
        m.submitted - m.undelivered,
        m.submitted
    );

    let peak = [m.after_idle.hwm, m.after_load.hwm]
        .into_iter()
        .flatten()
        .max();
    let limit = format!("100 MB ({})", bench::fmt_bytes(TARGET_BYTES));
    println!();
    println!("summary");
    row(
        "records",
        format!(
            "{} consents + {} messages",
            thousands(f.consents),
            thousands(f.messages)
        ),
    );
    row("store size on disk", bench::fmt_bytes(f.size_on_disk));
    row("fill time", format!("{:.1} s", f.total.as_secs_f64()));
    row(
        "node RSS after open (first answer / after idle)",
        format!(
            "{} / {}",
            opt_bytes(m.at_answer.rss),
            opt_bytes(m.after_idle.rss)
        ),
    );
    row(
        "node peak RSS: start-up / under load",
        format!(
            "{} / {}",
            opt_bytes(m.after_idle.hwm),
            opt_bytes(m.after_load.hwm)
        ),
    );
    row("node RSS after the load", opt_bytes(m.after_load.rss));
    match peak {
        Some(peak) => println!(
            "verdict: node peak RSS {} {} {limit} — {}",
            bench::fmt_bytes(peak),
            if peak < TARGET_BYTES { "<" } else { "≥" },
            if peak < TARGET_BYTES {
                "met"
            } else {
                "NOT met"
            }
        ),
        None => println!("verdict: not measured (no /proc/<pid>/status here)"),
    }
}

/// About 30 evenly spaced samples as "t:MiB".
fn timeline(samples: &[(Duration, u64)]) -> String {
    let step = samples.len().div_ceil(30).max(1);
    let mut points: Vec<String> = samples
        .iter()
        .step_by(step)
        .map(|(t, b)| format!("{:.1}:{:.0}", t.as_secs_f64(), *b as f64 / 1048576.0))
        .collect();
    if let Some((t, b)) = samples.last() {
        if !(samples.len() - 1).is_multiple_of(step) {
            points.push(format!(
                "{:.1}:{:.0}",
                t.as_secs_f64(),
                *b as f64 / 1048576.0
            ));
        }
    }
    points.join(" ")
}
