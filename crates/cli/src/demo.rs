//! `kurzdraht demo`: the Kreis Segeberg cooperation contract, played on three real nodes
//! (gRPC over mutual TLS on loopback, sled stores in a temporary directory). Every step
//! states what must happen; the demo exits non-zero if any expectation fails.

use anyhow::Context;
use kurzdraht_client::AgencyClient;
use kurzdraht_envelope::{envelope_hash, verify_receipt, ExpectedReceipt};
use kurzdraht_node::{clock, error::reason_of};
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use kurzdraht_testkit::LocalFederation;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::Code;

mod consoles;
mod jonas;
mod lena;

use jonas::{jonas_asks_what_is_held, jonas_is_referred, jonas_withdraws};
use lena::{lena_asks_to_move_out, lena_is_certified};

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const JN: &str = "jugendamt-norderstedt";

struct Story {
    step: u32,
    failures: Vec<String>,
}

impl Story {
    fn scene(&mut self, title: &str) {
        self.step += 1;
        println!("\n{}. {title}", self.step);
    }

    fn expect(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("   ✓ {what}: {detail}");
        } else {
            println!("   ✗ {what}: {detail}");
            self.failures.push(format!("step {}: {what}", self.step));
        }
    }

    fn expect_refusal<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        result: Result<T, tonic::Status>,
        code: Code,
        reason: &str,
    ) {
        match result {
            Err(s) if s.code() == code && reason_of(&s) == Some(reason) => self.expect(
                what,
                true,
                format!("{:?} ({reason}) — {}", s.code(), s.message()),
            ),
            Err(s) => self.expect(
                what,
                false,
                format!(
                    "expected {code:?}/{reason}, got {:?}/{:?}: {}",
                    s.code(),
                    reason_of(&s),
                    s.message()
                ),
            ),
            Ok(v) => self.expect(what, false, format!("expected a refusal, got {v:?}")),
        }
    }
}

fn subject(
    given: &str,
    family: &str,
    dob: &str,
    street: &str,
    postal: &str,
    city: &str,
) -> pb::Subject {
    pb::Subject {
        given_name: given.into(),
        family_name: family.into(),
        date_of_birth: dob.into(),
        address: Some(pb::Address {
            street: street.into(),
            postal_code: postal.into(),
            city: city.into(),
        }),
        case_references: vec![],
    }
}

fn with_ref(mut s: pb::Subject, agency: &str, reference: &str) -> pb::Subject {
    s.case_references = vec![pb::CaseReference {
        agency: agency.into(),
        reference: reference.into(),
    }];
    s
}

fn today() -> String {
    clock::date_of_ms(clock::now_ms())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

async fn submit(
    client: &mut AgencyClient,
    to: &str,
    consent: &str,
    in_reply_to: &str,
    body: Body,
) -> Result<pb::SubmitResponse, tonic::Status> {
    client
        .submit(pb::SubmitRequest {
            recipient: to.into(),
            consent_id: consent.into(),
            in_reply_to: in_reply_to.into(),
            body: Some(pb::MessageBody { body: Some(body) }),
            // As a real IT system does: one key per call, kept to repeat it safely.
            idempotency_key: kurzdraht_envelope::ids::new_id(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Polls the status until the message leaves QUEUED (or 15 s pass).
async fn settle(client: &mut AgencyClient, id: &str) -> anyhow::Result<pb::MessageStatus> {
    for _ in 0..750 {
        let s = client
            .get_status(pb::GetStatusRequest {
                message_id: id.into(),
            })
            .await?
            .into_inner();
        if s.state != pb::DeliveryState::Queued as i32 {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("message {id} still queued after 15 s")
}

/// Waits until `client`'s node holds consent `id` in `state`.
async fn consent_state(
    client: &mut AgencyClient,
    id: &str,
    state: pb::ConsentState,
) -> anyhow::Result<bool> {
    for _ in 0..750 {
        let consents = kurzdraht_client::all_consents(client).await?;
        if consents.iter().any(|c| {
            c.consent.as_ref().is_some_and(|r| r.consent_id == id) && c.state == state as i32
        }) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

async fn inbox_item(client: &mut AgencyClient, id: &str) -> anyhow::Result<Option<pb::InboxItem>> {
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            unacknowledged_only: false,
        })
        .await?
        .into_inner();
    while let Some(item) = stream.message().await? {
        if item.message_id == id {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

struct Demo {
    fed: LocalFederation,
    story: Story,
}

impl Demo {
    /// Delivery with a receipt the sender holds, checked here once more, independently:
    /// the receipt's signature against the receiver's pinned key, over the hash of the
    /// envelope exactly as the receiver holds it.
    async fn delivered(
        &mut self,
        from: &str,
        to: &str,
        id: &str,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut sender = self.fed.client(from).await?;
        let mut receiver = self.fed.client(to).await?;
        let status = settle(&mut sender, id).await?;
        let state = pb::DeliveryState::try_from(status.state).unwrap_or_default();
        let item = inbox_item(&mut receiver, id).await?;
        let keys = self
            .fed
            .config(from)?
            .directory
            .get(to)
            .map(|a| a.active_keys().to_vec())
            .unwrap_or_default();
        let verified = match (&status.receipt, &item) {
            (Some(receipt), Some(item)) => {
                let envelope = item.envelope.clone().unwrap_or_default();
                let hash = envelope_hash(&envelope);
                verify_receipt(
                    receipt,
                    &keys,
                    &ExpectedReceipt {
                        message_id: id,
                        envelope_sha256: &hash,
                        sender: from,
                        receiver: to,
                    },
                )
                .map(|_| hex_prefix(&hash))
                .map_err(|e| e.to_string())
            }
            _ => Err("no receipt or not in the inbox".to_string()),
        };
        self.story.expect(
            &format!("{what} delivered {from} → {to}"),
            state == pb::DeliveryState::Delivered && verified.is_ok(),
            match &verified {
                Ok(h) => format!(
                    "{} with a receipt signed by {to} over envelope sha256 {h}…",
                    state.as_str_name()
                ),
                Err(e) => format!("{} — {e}", state.as_str_name()),
            },
        );
        Ok(())
    }
}

fn categories(c: &[pb::DataCategory]) -> Vec<i32> {
    c.iter().map(|c| *c as i32).collect()
}

/// Stands in for the SHA-256 of the scanned, signed consent form.
fn form_hash(reference: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(format!("scan of {reference}").as_bytes()).to_vec()
}

fn hex_prefix(h: &[u8; 32]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(keep: Option<PathBuf>, console: bool) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match keep {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("federation")
        }
    };
    println!("kurzdraht demo — Kooperationsvertrag Kreis Segeberg");
    println!(
        "Three nodes, real gRPC over mutual TLS on loopback, sled stores in {}",
        dir.display()
    );
    let fed = LocalFederation::start(&dir)
        .await
        .context("starting the three nodes")?;
    for a in &fed.agencies {
        let c = fed.config(&a.id)?;
        println!(
            "   node {:<26} peer {}  api {}",
            a.id, c.peer_addr, c.api_addr
        );
    }
    let mut demo = Demo {
        fed,
        story: Story {
            step: 0,
            failures: vec![],
        },
    };
    let mut result = play(&mut demo).await;
    if console && result.is_ok() {
        result = consoles::open(&demo.fed).await;
    }
    let Demo { fed, mut story } = demo;
    let dirs: Vec<(String, PathBuf)> = fed
        .agencies
        .iter()
        .filter_map(|a| fed.config(&a.id).ok().map(|c| (a.id.clone(), c.data_dir)))
        .collect();
    fed.shutdown().await?;
    if let Err(e) = result {
        story.failures.push(format!("the story stopped: {e:#}"));
        println!("\n   ✗ the story stopped: {e:#}");
    }
    story.scene("Every node's audit chain verifies (nodes stopped, stores opened offline)");
    for (agency, data_dir) in dirs {
        let verdict = kurzdraht_ledger::Ledger::open(&data_dir).and_then(|l| l.verify_audit());
        match verdict {
            Ok(r) => story.expect(
                agency.as_str(),
                r.entries > 0,
                format!("{} entries, head {}…", r.entries, hex_prefix(&r.head_hash)),
            ),
            Err(e) => story.expect(agency.as_str(), false, e),
        }
    }
    println!();
    if story.failures.is_empty() {
        println!("All {} steps held.", story.step);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} expectation(s) failed:", story.failures.len());
        for f in &story.failures {
            println!("  - {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn play(d: &mut Demo) -> anyhow::Result<()> {
    let jobcenter = d.fed.client(JC).await?;
    let kreis = d.fed.client(JA).await?;
    let norderstedt = d.fed.client(JN).await?;
    let lena = subject(
        "Lena",
        "Hansen",
        "2005-04-12",
        "Kurhausstraße 7",
        "23795",
        "Bad Segeberg",
    );
    let jonas = subject(
        "Jonas",
        "Petersen",
        "2006-09-03",
        "Ulzburger Straße 40",
        "22850",
        "Norderstedt",
    );
    let kai = subject(
        "Kai",
        "Lorenzen",
        "2000-01-15",
        "Hamburger Straße 3",
        "23795",
        "Bad Segeberg",
    );
    println!("\nThe people of the story (invented; none of this may reach the nodes' logs):");
    for p in [&lena, &jonas, &kai] {
        let address = p
            .address
            .as_ref()
            .map(|a| format!("{}, {} {}", a.street, a.postal_code, a.city))
            .unwrap_or_default();
        println!(
            "   {} {}, born {}, {address}",
            p.given_name, p.family_name, p.date_of_birth
        );
    }
    let today = today();
    let cast = Cast {
        jobcenter,
        kreis,
        norderstedt,
        lena,
        jonas,
        kai,
        today,
    };
    let lena_case = lena_asks_to_move_out(d, &cast).await?;
    lena_is_certified(d, &cast, &lena_case).await?;
    let jonas_case = jonas_is_referred(d, &cast).await?;
    jonas_withdraws(d, &cast, &jonas_case).await?;
    jonas_asks_what_is_held(d, &cast).await?;
    rules(d, &cast, &lena_case.lena_consent).await
}

/// What Lena's story carries from scene to scene.
#[derive(Clone)]
struct LenaCase {
    lena_consent: String,
    certification: Body,
    request: pb::SubmitResponse,
}

/// What Jonas's story carries from scene to scene.
#[derive(Clone)]
struct JonasCase {
    jonas_consent: String,
    referral: pb::SubmitResponse,
}

/// The clients of the three agencies' IT systems and the people of the story.
#[derive(Clone)]
struct Cast {
    jobcenter: AgencyClient,
    kreis: AgencyClient,
    norderstedt: AgencyClient,
    lena: pb::Subject,
    jonas: pb::Subject,
    kai: pb::Subject,
    today: String,
}

/// Rules the contract does not allow.
async fn rules(d: &mut Demo, cast: &Cast, lena_consent: &str) -> anyhow::Result<()> {
    let mut kreis = cast.kreis.clone();
    let lena = cast.lena.clone();
    let kai = cast.kai.clone();
    let today = cast.today.clone();
    d.story.scene("Rules the contract does not allow");
    let kai_cert = submit(
        &mut kreis,
        JC,
        lena_consent,
        "",
        Body::MoveOutCertification(pb::MoveOutCertification {
            subject: Some(kai.clone()),
            outcome: pb::CertificationOutcome::Supported as i32,
            ground: pb::MoveOutGround::SeriousSocialReasons as i32,
            statement: "—".into(),
            interview_date: today.clone(),
            issuing_caseworker: "Frau Sievers".into(),
            health_note: String::new(),
        }),
    )
    .await;
    d.story.expect_refusal(
        "a certification for Kai Lorenzen, 26, refused (U25 rule)",
        kai_cert,
        Code::InvalidArgument,
        "over-age",
    );
    let jugendamt_decision = submit(
        &mut kreis,
        JC,
        lena_consent,
        "",
        Body::MoveOutDecision(pb::MoveOutDecision {
            subject: Some(lena.clone()),
            outcome: pb::DecisionOutcome::AssuranceGranted as i32,
            ground: 0,
            decision_date: today.clone(),
            tenancy_contract_date: String::new(),
            caseworker: "Frau Sievers".into(),
        }),
    )
    .await;
    d.story.expect_refusal(
        "a MoveOutDecision sent by a Jugendamt refused (only the Jobcenter decides)",
        jugendamt_decision,
        Code::PermissionDenied,
        "permission-denied",
    );
    Ok(())
}
