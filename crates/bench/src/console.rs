//! `kurzdraht-bench console`: how fast every console page answers with a large store,
//! measured against the target of issue 16 "every console page answers in under 100 ms (p99)
//! with 100,000 consents and 100,000 messages in the store".
//!
//! - **the store**: the Jugendamt Kreis Segeberg's, filled as `footprint` fills it
//!   (`footprint_fill.rs`: replicated consents, each with the Jobcenter's signed
//!   ConsentNotice in the inbox; received, sealed CertificationRequests with bodies and
//!   receipts), then — opened offline as its node opens it — the Jugendamt's own sent
//!   MoveOutCertifications (sealed, enqueued and finished DELIVERED with the Jobcenter's
//!   receipt) and two console accounts (a caseworker, the data protection officer);
//! - **the node**: `kurzdraht serve` of the same profile on that store with `[console] listen`;
//! - **the pages**: each fetched over HTTPS (`kurzdraht_testkit::console_client`) by a
//!   signed-in account of the role that may see it — first warm-up requests, then the
//!   measured ones (the warm-up ends after a quarter of `--max-seconds`), one after another, on one kept-alive connection (or, with
//!   `--fresh-connections`, a new TCP + TLS connection per request); each page's run is
//!   bounded by `--max-seconds`;
//! - **the table**: p50/p90/p99/max per page and PASS/FAIL against 100 ms at p99.

use crate::common::{self as bench, JA, JC};
use crate::footprint_fill::{fill, subject, this_year, Rng};
use crate::footprint_report::thousands;
use anyhow::{bail, Context};
use http::Method;
use kurzdraht_envelope::sign_receipt;
use kurzdraht_ledger::{AccountRole, Finish};
use kurzdraht_node::config::NodeConfig;
use kurzdraht_node::{clock, Node};
use kurzdraht_proto::v1::{self as pb, message_body::Body, MessageKind};
use kurzdraht_testkit::console_client::ConsoleClient;
use kurzdraht_testkit::ServeProcess;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The target: every page's p99 under this.
const TARGET: Duration = Duration::from_millis(100);
const PASSWORD: &str = "korrekt-pferd-batterie-7";
const CASEWORKER: &str = "s.sievers";
const DATA_PROTECTION: &str = "d.ahrens";
/// How long the node may take to open its store and serve its console.
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// What `kurzdraht-bench console` was asked for.
pub(crate) struct Params {
    pub consents: usize,
    /// Messages in the store: received ones in the inbox and sent ones in the outbox.
    pub messages: usize,
    /// Percent of `messages` that are the node's own sent messages.
    pub sent_percent: usize,
    pub requests: usize,
    pub warmup: usize,
    pub max_seconds: u64,
    pub fresh_connections: bool,
    pub dir: Option<PathBuf>,
}

/// Who fetches a page.
#[derive(Clone, Copy)]
enum Who {
    Nobody,
    Caseworker,
    DataProtection,
}

/// One measured page.
struct PageSpec {
    label: String,
    path: String,
    who: Who,
}

/// What the offline phase wrote and found.
struct Prepared {
    newest_seq: u64,
    size_on_disk: u64,
    scans: Vec<(&'static str, usize, Duration)>,
}

pub(crate) async fn run(p: Params) -> anyhow::Result<ExitCode> {
    if p.consents == 0 || p.messages == 0 || p.requests == 0 || p.sent_percent > 100 {
        bail!("--consents, --messages and --requests must be above 0, --sent-percent at most 100");
    }
    let console_addr = *kurzdraht_testkit::free_loopback_addrs(1)?
        .first()
        .context("no free loopback port")?;
    let fed = bench::TempFederation::create_with(p.dir.clone(), "console", |specs| {
        let ja = specs
            .iter_mut()
            .find(|s| s.id == JA)
            .context("no Jugendamt among the agencies")?;
        ja.console_addr = Some(console_addr);
        Ok(())
    })?;
    let jc = NodeConfig::load(&fed.files_of(JC)?.node_config)?;
    let ja_path = fed.files_of(JA)?.node_config.clone();
    let ja = NodeConfig::load(&ja_path).context("loading the Jugendamt's node.toml")?;
    let sent = p.messages * p.sent_percent / 100;
    let received = p.messages - sent;

    println!("kurzdraht-bench console — every console page, against p99 < 100 ms");
    bench::print_machine(fed.path());
    println!(
        "records:    {} consents + {} messages ({} received in the inbox, {} sent in the outbox)",
        thousands(p.consents),
        thousands(p.messages),
        thousands(received),
        thousands(sent)
    );
    println!("store:      the Jugendamt's, filled as `footprint` fills it (replicated consents with their signed");
    println!("            ConsentNotices, received sealed CertificationRequests with receipts), then its own sent");
    println!("            MoveOutCertifications (sealed, finished DELIVERED with the Jobcenter's receipt)");
    println!("node:       `kurzdraht serve` of this profile on that store, [console] listen = {console_addr}");
    println!(
        "requests:   {} per page after {} warm-up, one after another, {}; at most {} s per page",
        p.requests,
        p.warmup,
        if p.fresh_connections {
            "each on a new connection (TCP + TLS + HTTP/1.1 handshake)"
        } else {
            "on one kept-alive HTTPS connection per account"
        },
        p.max_seconds
    );

    eprintln!(
        "filling the Jugendamt's store in {} …",
        ja.data_dir.display()
    );
    let filled = fill(&ja, &jc, p.consents, received).await?;
    let prepared = prepare(&ja, &jc, &filled.produced.consent_sample, p.consents, sent).await?;
    println!(
        "store size: {} on disk (sled's size_on_disk) after the fill",
        bench::fmt_bytes(prepared.size_on_disk)
    );
    println!(
        "full scans: (each once, offline, on the filled store — what the Auskunft read before its indexes)"
    );
    for (what, n, took) in &prepared.scans {
        println!(
            "            {what}: {} in {}",
            thousands(*n),
            bench::fmt_duration(*took)
        );
    }
    let (person, person_consents, person_messages) = person_asked(p.consents, received);
    println!(
        "Auskunft:   about {} {}, born {} — {person_consents} of the consents, {person_messages} of the received messages",
        person.given_name, person.family_name, person.date_of_birth
    );

    eprintln!("starting the Jugendamt node with its console …");
    let mut node = ServeProcess::spawn(JA, &ja_path, fed.path().join("jugendamt.log"))?;
    let outcome = measure_pages(
        &p,
        &ja,
        &mut node,
        &filled.produced.message_sample,
        &prepared,
        &person,
    )
    .await;
    let stopped = node.stop().await;
    let rows = outcome?;
    stopped.context("stopping the Jugendamt node")?;
    print_table(&rows);
    println!("load avg:   {} (1/5/15 min, at end)", bench::load_average());
    Ok(ExitCode::SUCCESS)
}

/// Opens the filled store offline as the node does: adds the node's own sent messages and
/// the two accounts, flushes, and reads the inbox's newest sequence number and the size.
async fn prepare(
    ja: &NodeConfig,
    jc: &NodeConfig,
    consent_sample: &[String],
    consents: usize,
    sent: usize,
) -> anyhow::Result<Prepared> {
    let node = Node::open(ja).context("reopening the Jugendamt's store")?;
    let accounts = node.accounts();
    accounts
        .add(
            "bench",
            CASEWORKER,
            "Frau Sievers",
            AccountRole::Caseworker,
            PASSWORD,
        )
        .await?;
    accounts
        .add(
            "bench",
            DATA_PROTECTION,
            "Frau Ahrens (Datenschutz)",
            AccountRole::DataProtection,
            PASSWORD,
        )
        .await?;
    let ledger = node.ledger().clone();
    let every = (consents / consent_sample.len().max(1)).max(1);
    let year = this_year();
    let started = Instant::now();
    let now = clock::now_ms();
    for k in 0..sent {
        let j = k % consent_sample.len().max(1);
        let consent_id = consent_sample.get(j).cloned().unwrap_or_default();
        let person = subject(j * every, year);
        let body = pb::MessageBody {
            body: Some(Body::MoveOutCertification(pb::MoveOutCertification {
                subject: Some(person),
                outcome: pb::CertificationOutcome::Supported as i32,
                ground: pb::MoveOutGround::SeriousSocialReasons as i32,
                statement: "Rückverweis in das Elternhaus nicht zumutbar; Auszug aus schwerwiegenden sozialen Gründen erforderlich.".into(),
                interview_date: clock::date_of_ms(now).map(|d| d.to_string()).unwrap_or_default(),
                issuing_caseworker: "Frau Sievers".into(),
                health_note: String::new(),
            })),
        };
        let at = now - (sent - k) as i64 * 1000;
        let out = bench::seal_outgoing(
            &ja.signing_key,
            JA,
            MessageKind::MoveOutCertification,
            JC,
            &consent_id,
            &body,
            at,
            ja.delivery.deadline,
        );
        let receipt = sign_receipt(
            &pb::Receipt {
                message_id: out.message_id.clone(),
                envelope_sha256: out.envelope_sha256.to_vec(),
                sender: JA.into(),
                receiver: JC.into(),
                received_at_ms: at + 40,
            },
            &jc.signing_key,
        );
        ledger.enqueue(&out)?;
        ledger.finish(&out.message_id, &Finish::Delivered { receipt }, at + 40)?;
        if (k + 1) % 10_000 == 0 || k + 1 == sent {
            eprintln!(
                "  sent: {} / {sent} messages written ({:.1} s)",
                k + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    ledger.flush().await?;
    let newest_seq = node.inbox().newest_seq()?;
    let size_on_disk = ledger.size_on_disk()?;
    let scans = scans(&ledger)?;
    Ok(Prepared {
        newest_seq,
        size_on_disk,
        scans,
    })
}

/// A rough profile of what the Auskunft reads: each full scan of the store it makes
/// (`Reports::build_access_report`), timed once on the filled store (offline, the node's own
/// store options and data key): (what, records, time).
fn scans(
    ledger: &kurzdraht_ledger::Ledger,
) -> anyhow::Result<Vec<(&'static str, usize, Duration)>> {
    fn timed<T, E: Into<anyhow::Error>>(
        what: &'static str,
        it: impl Iterator<Item = Result<T, E>>,
    ) -> anyhow::Result<(&'static str, usize, Duration)> {
        let t = Instant::now();
        let mut n = 0;
        for r in it {
            r.map_err(Into::into)?;
            n += 1;
        }
        Ok((what, n, t.elapsed()))
    }
    Ok(vec![
        timed("consents (opened: sealed at rest)", ledger.consents_iter())?,
        timed("message status records", ledger.message_records_iter())?,
        timed(
            "inbox records (opened: sealed at rest)",
            ledger.inbox_iter(),
        )?,
        timed("audit entries", ledger.audit_iter())?,
        {
            // what "Protokoll prüfen" starts in the background
            let t = Instant::now();
            let report = ledger.verify_audit()?;
            (
                "audit chain verified (Protokoll prüfen, in the background)",
                report.entries as usize,
                t.elapsed(),
            )
        },
    ])
}

/// The person the Auskunft asks about (the fill's person 0), how many consents of the fill
/// are theirs and how many received messages are about them.
fn person_asked(consents: usize, received: usize) -> (pb::Subject, usize, usize) {
    let year = this_year();
    let person = subject(0, year);
    let same = |i: usize| {
        let s = subject(i, year);
        s.given_name == person.given_name
            && s.family_name == person.family_name
            && s.date_of_birth == person.date_of_birth
    };
    let theirs = (0..consents).filter(|&i| same(i)).count();
    // The fill's draw of a consent per message (footprint_fill::Source::run).
    let mut rng = Rng(0x5e6e_be26);
    let about = (0..received).filter(|_| same(rng.below(consents))).count();
    (person, theirs, about)
}

/// `YYYY-MM-DD` as the console's form takes it: `TT.MM.JJJJ`.
fn german(date: &str) -> String {
    let mut parts = date.split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => format!("{d}.{m}.{y}"),
        _ => date.to_string(),
    }
}

/// The pages, in the order they are measured.
fn pages(message_id: &str, prepared: &Prepared, person: &pb::Subject) -> Vec<PageSpec> {
    let middle = prepared.newest_seq / 2;
    let query = serde_urlencoded::to_string([
        ("vorname", person.given_name.as_str()),
        ("nachname", person.family_name.as_str()),
        ("geburtsdatum", german(&person.date_of_birth).as_str()),
    ])
    .unwrap_or_default();
    let page = |label: &str, path: String, who| PageSpec {
        label: label.into(),
        path,
        who,
    };
    vec![
        page("/anmelden", "/anmelden".into(), Who::Nobody),
        page("/posteingang", "/posteingang".into(), Who::Caseworker),
        page(
            "/posteingang?art=entscheidung (none stored: full filtered scan)",
            "/posteingang?art=entscheidung".into(),
            Who::Caseworker,
        ),
        page(
            &format!("/posteingang?vor={middle} (middle)"),
            format!("/posteingang?vor={middle}"),
            Who::Caseworker,
        ),
        page(
            "/posteingang/neu?nach=<newest> (204)",
            format!("/posteingang/neu?nach={}", prepared.newest_seq),
            Who::Caseworker,
        ),
        page(
            "/nachricht/<id> (received)",
            format!("/nachricht/{message_id}"),
            Who::Caseworker,
        ),
        page("/konto", "/konto".into(), Who::Caseworker),
        page("/auskunft (form)", "/auskunft".into(), Who::DataProtection),
        page(
            "/auskunft?vorname=…&nachname=…&geburtsdatum=…",
            format!("/auskunft?{query}"),
            Who::DataProtection,
        ),
        page("/protokoll", "/protokoll".into(), Who::DataProtection),
        page(
            "/protokoll?bereich=console.",
            "/protokoll?bereich=console.".into(),
            Who::DataProtection,
        ),
    ]
}

/// One page's latencies, sorted.
struct Row {
    label: String,
    times: Vec<Duration>,
    /// The run stopped at `--max-seconds` before all requests were made.
    cut: bool,
    bytes: usize,
}

async fn console_up(client: &mut ConsoleClient, node: &mut ServeProcess) -> anyhow::Result<()> {
    let until = Instant::now() + START_TIMEOUT;
    loop {
        node.check_running()?;
        match client.try_request(Method::GET, "/anmelden", None).await {
            Ok(page) if page.status == 200 => return Ok(()),
            Ok(page) => bail!("the console answered /anmelden with {}", page.status),
            Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!(
                "the console did not answer within {} s: {e}",
                START_TIMEOUT.as_secs()
            ),
        }
    }
}

async fn signed_in(
    ja: &NodeConfig,
    addr: std::net::SocketAddr,
    name: &str,
    keep_alive: bool,
) -> anyhow::Result<ConsoleClient> {
    let mut client = ConsoleClient::new(addr, JA, &ja.tls.ca_pem);
    client.keep_alive = keep_alive;
    let form = client
        .try_request(Method::GET, "/anmelden", None)
        .await
        .map_err(anyhow::Error::msg)?;
    let csrf = form.field("csrf").unwrap_or_default();
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("name", name),
        ("password", PASSWORD),
    ])?;
    let answer = client
        .try_request(Method::POST, "/anmelden", Some(body))
        .await
        .map_err(anyhow::Error::msg)?;
    if answer.status != 303 {
        bail!("signing in as {name}: {} instead of 303", answer.status);
    }
    Ok(client)
}

async fn measure_pages(
    p: &Params,
    ja: &NodeConfig,
    node: &mut ServeProcess,
    message_sample: &[String],
    prepared: &Prepared,
    person: &pb::Subject,
) -> anyhow::Result<Vec<Row>> {
    let addr = ja
        .console
        .as_ref()
        .map(|c| c.listen)
        .context("the Jugendamt's node.toml has no [console]")?;
    let started = Instant::now();
    let keep_alive = !p.fresh_connections;
    let mut nobody = ConsoleClient::new(addr, JA, &ja.tls.ca_pem);
    console_up(&mut nobody, node).await?;
    nobody.keep_alive = keep_alive;
    eprintln!(
        "  the console answers after {:.1} s; measuring …",
        started.elapsed().as_secs_f64()
    );
    let mut caseworker = signed_in(ja, addr, CASEWORKER, keep_alive).await?;
    let mut officer = signed_in(ja, addr, DATA_PROTECTION, keep_alive).await?;
    let message_id = message_sample
        .get(message_sample.len() / 2)
        .cloned()
        .context("the fill kept no message ids")?;
    let mut rows = Vec::new();
    for page in pages(&message_id, prepared, person) {
        let client = match page.who {
            Who::Nobody => &mut nobody,
            Who::Caseworker => &mut caseworker,
            Who::DataProtection => &mut officer,
        };
        let row = measure_page(p, client, &page).await?;
        eprintln!(
            "  {}: p99 {:.1} ms over {}",
            page.label,
            bench::ms(bench::percentile(&row.times, 99.0)),
            row.times.len()
        );
        rows.push(row);
    }
    node.check_running()?;
    Ok(rows)
}

async fn measure_page(
    p: &Params,
    client: &mut ConsoleClient,
    page: &PageSpec,
) -> anyhow::Result<Row> {
    let budget = Duration::from_secs(p.max_seconds);
    let started = Instant::now();
    let mut times = Vec::with_capacity(p.requests);
    let mut bytes = 0;
    let mut cut = false;
    let mut warm = 0;
    while times.len() < p.requests {
        // The warm-up ends early after a quarter of the page's time, so that a slow page
        // still gets measured requests.
        let warming = warm < p.warmup && started.elapsed() < budget / 4;
        if started.elapsed() >= budget {
            cut = true;
            break;
        }
        let t = Instant::now();
        let answer = client
            .try_request(Method::GET, &page.path, None)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| page.path.clone())?;
        let took = t.elapsed();
        if !matches!(answer.status, 200 | 204) {
            bail!(
                "{} answered {}: {}",
                page.path,
                answer.status,
                answer.body.chars().take(400).collect::<String>()
            );
        }
        bytes = answer.body.len();
        if warming {
            warm += 1;
        } else {
            times.push(took);
        }
    }
    times.sort_unstable();
    Ok(Row {
        label: page.label.clone(),
        times,
        cut,
        bytes,
    })
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| page | n | p50 ms | p90 ms | p99 ms | max ms | body | p99 < 100 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for r in rows {
        let p99 = bench::percentile(&r.times, 99.0);
        let pass = !r.times.is_empty() && p99 < TARGET;
        if !pass {
            failed.push(r.label.as_str());
        }
        println!(
            "| {} | {}{} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.label,
            r.times.len(),
            if r.cut { " (cut at --max-seconds)" } else { "" },
            bench::ms(bench::percentile(&r.times, 50.0)),
            bench::ms(bench::percentile(&r.times, 90.0)),
            bench::ms(p99),
            bench::ms(r.times.last().copied().unwrap_or_default()),
            bench::fmt_bytes(r.bytes as u64),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    println!();
    if failed.is_empty() {
        println!("verdict: every page p99 < 100 ms — met");
    } else {
        println!(
            "verdict: p99 < 100 ms NOT met by {} page(s): {}",
            failed.len(),
            failed.join(", ")
        );
    }
}
