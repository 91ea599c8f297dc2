//! kurzdraht-testkit: the one copy of each harness the tests, the demo and the benchmarks
//! use. Not part of the node library; the `kurzdraht` binary uses only [`federation`] (the
//! demo) and [`ports`] (`pki init`).
//!
//! Everything here drives the real parts: a [`LocalFederation`] of the three Segeberg
//! agencies (gRPC over mutual TLS on loopback, sled stores in a temporary directory) and
//! their AgencyApi clients. Nothing is mocked.
//!
//! - [`federation`]: the local federation itself; [`ports`]: free loopback ports;
//!   [`process`]: the real `kurzdraht` binary; [`serve`]: the one handle on a `kurzdraht
//!   serve` child process; [`python`]: the independent Python client;
//!   [`raw_h2`]: a peer speaking HTTP/2 frames by hand; [`link`]: a freezable TCP link;
//!   [`console_client`]: an HTTPS client of a node's console (status, headers, cookies);
//!   [`browser`]: a headless Chromium and the axe-core accessibility check.
//! - [`start`]: a federation in a fresh temporary directory.
//! - subject, consent and body builders: [`subject`], [`consent_request`],
//!   [`certification_request`], [`move_out_certification`], …
//! - calls: [`submit`], [`record_consent`], [`status`], [`read_inbox`].
//! - waiting: [`wait_until`] polls every 15 ms for at most 15 s and panics with what it was
//!   waiting for and what it saw last; [`settle`], [`wait_for_state`],
//!   [`wait_for_consent_state`], [`wait_for_inbox_len`] build on it; [`assert_stays`] checks
//!   that something does *not* happen for a short while.
//! - assertions: [`expect_refusal`] checks the gRPC code and the `kurzdraht-reason` metadata.
//! - evidence: [`verify_delivery`] checks a receipt independently of the sending node.
//! - time and links: [`start_with_clocks`] gives nodes clocks the test steps; [`link`] is a
//!   TCP link the test can freeze, and [`Harness::route_via`] sends one node's deliveries
//!   to a peer through it.

pub mod browser;
pub mod console_client;
pub mod federation;
pub mod link;
pub mod ports;
pub mod process;
pub mod python;
pub mod raw_h2;
pub mod serve;

pub use federation::LocalFederation;
pub use ports::{free_loopback_addrs, segeberg_on_free_ports};
pub use process::{binary, workspace};
pub use python::{printed, require_python_grpc, run_python_client, run_python_script, INSTALL};
pub use serve::{ServeBuilder, ServeError, ServeProcess};

use kurzdraht_client::AgencyClient;
use kurzdraht_envelope::{envelope_hash, verify_receipt, ExpectedReceipt};
use kurzdraht_node::error::reason_of;
use kurzdraht_node::{clock, policy};
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::{Code, Status};

pub const JC: &str = "jobcenter-segeberg";
pub const JA: &str = "jugendamt-kreis-segeberg";
pub const JN: &str = "jugendamt-norderstedt";

/// How often [`wait_until`] looks again.
pub const POLL: Duration = Duration::from_millis(15);
/// How long [`wait_until`] waits at most.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A running federation and the temporary directory that holds its PKI and stores.
/// The directory is removed when this is dropped (after the nodes were stopped or dropped).
pub struct Harness {
    pub fed: LocalFederation,
    pub dir: TempDir,
}

/// The password of the console accounts the tests add ([`Harness::add_console_account`]).
pub const CONSOLE_PASSWORD: &str = "Kurzdraht-Segeberg-2026";

impl Harness {
    /// A client of `agency`'s console signed in as `name` (with [`CONSOLE_PASSWORD`]).
    pub async fn console_signed_in(
        &self,
        agency: &str,
        name: &str,
    ) -> console_client::ConsoleClient {
        let mut c = console_client::ConsoleClient::of(&self.fed, agency);
        let page = c.sign_in(name, CONSOLE_PASSWORD).await;
        assert_eq!(
            page.status, 303,
            "sign-in of {name} at {agency}: {}",
            page.body
        );
        c
    }

    /// Adds a console account at `agency`'s running node, with [`CONSOLE_PASSWORD`].
    pub async fn add_console_account(
        &self,
        agency: &str,
        name: &str,
        display_name: &str,
        role: kurzdraht_ledger::AccountRole,
    ) {
        self.fed
            .node(agency)
            .unwrap_or_else(|| panic!("{agency}'s node is not running"))
            .accounts()
            .add("test", name, display_name, role, CONSOLE_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("add the console account {name} at {agency}: {e}"));
    }

    /// An authenticated AgencyApi client of `agency`'s IT system.
    pub async fn client(&self, agency: &str) -> AgencyClient {
        self.fed
            .client(agency)
            .await
            .unwrap_or_else(|e| panic!("connect to {agency}'s AgencyApi: {e}"))
    }

    /// The data directory of `agency`'s node (its sled store).
    pub fn data_dir(&self, agency: &str) -> PathBuf {
        self.fed
            .config(agency)
            .unwrap_or_else(|e| panic!("config of {agency}: {e}"))
            .data_dir
    }

    /// The bearer token of `agency`'s IT system, as written by the PKI set-up.
    pub fn token(&self, agency: &str) -> String {
        let path = self.fed.dir.join(agency).join("api-token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    pub async fn stop(&mut self, agency: &str) {
        self.fed
            .stop_node(agency)
            .await
            .unwrap_or_else(|e| panic!("stop {agency}: {e}"));
        assert!(!self.fed.is_running(agency), "{agency} still running");
    }

    pub async fn restart(&mut self, agency: &str) {
        self.fed
            .start_node(agency)
            .await
            .unwrap_or_else(|e| panic!("start {agency} again: {e}"));
    }

    /// The running node of `agency`, in this process.
    pub fn node(&self, agency: &str) -> &kurzdraht_node::Node {
        self.fed
            .node(agency)
            .unwrap_or_else(|| panic!("{agency} is not running"))
    }

    /// Restarts `agency`'s node with a directory of its own in which `peer`'s endpoint is
    /// `via` (e.g. a [`link::FrozenLink`]); the other nodes keep the shared directory.
    pub async fn route_via(&mut self, agency: &str, peer: &str, via: std::net::SocketAddr) {
        let shared = self.fed.dir.join("directory.toml");
        let text = std::fs::read_to_string(&shared).expect("read directory.toml");
        let endpoint = self
            .fed
            .config(peer)
            .unwrap_or_else(|e| panic!("config of {peer}: {e}"))
            .peer_addr;
        let from = format!("endpoint = \"https://{endpoint}\"");
        assert!(text.contains(&from), "directory.toml has no {from}");
        // A newer version (the node refuses a changed directory of the version it ran),
        // signed by the federation operator.
        let version = kurzdraht_node::directory::Directory::from_toml(&text)
            .expect("the shared directory")
            .version()
            + 1;
        let routed = kurzdraht_node::pki::with_version(
            &text.replace(&from, &format!("endpoint = \"https://{via}\"")),
            version,
        )
        .expect("a version line");
        let own = self.fed.dir.join(agency).join("directory-routed.toml");
        std::fs::write(&own, routed).expect("write the routed directory");
        let operator =
            std::fs::read_to_string(self.fed.dir.join("operator.key")).expect("the operator key");
        kurzdraht_node::pki::sign_directory_file(&own, &operator)
            .expect("sign the routed directory");
        self.reconfigure(
            agency,
            &[(
                "file = \"../directory.toml\"",
                "file = \"directory-routed.toml\"",
            )],
        )
        .await;
    }

    /// Stops `agency`'s node, replaces text in its node.toml (each `from` must be there) and
    /// starts it again.
    pub async fn reconfigure(&mut self, agency: &str, edits: &[(&str, &str)]) {
        self.stop(agency).await;
        let path = self
            .fed
            .agencies
            .iter()
            .find(|a| a.id == agency)
            .unwrap_or_else(|| panic!("no files of {agency}"))
            .node_config
            .clone();
        let mut toml = std::fs::read_to_string(&path).expect("read node.toml");
        for (from, to) in edits {
            assert!(toml.contains(from), "{agency}'s node.toml has no {from:?}");
            toml = toml.replace(from, to);
        }
        std::fs::write(&path, toml).expect("write node.toml");
        self.restart(agency).await;
    }
}

/// Starts the three Segeberg nodes in a fresh temporary directory, each on the clock
/// `clock_of(agency)` gives it (kept across restarts).
pub async fn start_with_clocks(
    clock_of: impl Fn(&str) -> std::sync::Arc<dyn kurzdraht_node::clock::Clock>,
) -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fed = LocalFederation::start_with_clocks(&dir.path().join("federation"), clock_of)
        .await
        .expect("start the three nodes");
    Harness { fed, dir }
}

/// The three nodes' manual clocks, all standing at the system's time now.
pub type Clocks = std::collections::BTreeMap<&'static str, std::sync::Arc<clock::ManualClock>>;

/// Starts the three Segeberg nodes on manual clocks standing at the system's time now; the
/// test moves them (and wakes a node's workers with [`Harness::node`]`.wake_all()`).
pub async fn start_on_manual_clocks() -> (Harness, Clocks) {
    let now = clock::now_ms();
    let clocks: Clocks = [JC, JA, JN]
        .into_iter()
        .map(|a| (a, clock::ManualClock::at(now)))
        .collect();
    let h = start_on(&clocks).await;
    (h, clocks)
}

/// Starts the three Segeberg nodes on the given clocks (the system clock for any other).
pub async fn start_on(clocks: &Clocks) -> Harness {
    let clocks = clocks.clone();
    start_with_clocks(
        move |agency| -> std::sync::Arc<dyn kurzdraht_node::clock::Clock> {
            match clocks.get(agency) {
                Some(c) => c.clone(),
                None => std::sync::Arc::new(clock::SystemClock),
            }
        },
    )
    .await
}

/// Starts the three Segeberg nodes in a fresh temporary directory.
pub async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fed = LocalFederation::start(&dir.path().join("federation"))
        .await
        .expect("start the three nodes");
    Harness { fed, dir }
}

// ---- builders ----

/// Lena Hansen, born 2005-04-12, as the CLI's subject arguments.
pub const LENA_CLI: [&str; 6] = [
    "--given-name",
    "Lena",
    "--family-name",
    "Hansen",
    "--date-of-birth",
    "2005-04-12",
];

/// The CLI arguments (after `consent grant` and its own flags) of Lena's written consent to
/// `recipient` for the U25 move-out, covering identity and housing situation, recorded by
/// Herr Jensen with its signed form `form`.
pub fn lena_written_consent_cli<'a>(recipient: &'a str, form: &'a str) -> Vec<&'a str> {
    let mut args = LENA_CLI.to_vec();
    args.extend([
        "--recipient",
        recipient,
        "--purpose",
        "u25-move-out",
        "--category",
        "identity",
        "--category",
        "housing-situation",
        "--form",
        "written",
        "--evidence",
        "JC-SE/0815",
        "--recorded-by",
        "Herr Jensen",
        "--evidence-file",
        form,
    ]);
    args
}

/// A young person with an address in Bad Segeberg.
pub fn subject(given: &str, family: &str, date_of_birth: &str) -> pb::Subject {
    pb::Subject {
        given_name: given.into(),
        family_name: family.into(),
        date_of_birth: date_of_birth.into(),
        address: Some(pb::Address {
            street: "Kurhausstraße 7".into(),
            postal_code: "23795".into(),
            city: "Bad Segeberg".into(),
        }),
        case_references: vec![],
    }
}

/// Today's German date, `YYYY-MM-DD`, as the nodes' age rules see it.
pub fn today() -> String {
    clock::german_date_of_ms(clock::now_ms())
        .expect("today")
        .to_string()
}

/// The date of birth of someone whose `years`-th birthday is today in Germany (1 March
/// for a 29 February that does not exist in that year).
pub fn birthday_years_ago(years: i32) -> String {
    let today = clock::german_date_of_ms(clock::now_ms()).expect("today");
    let (m, d) = (u8::from(today.month()), today.day());
    let y = today.year() - years;
    let text = format!("{y:04}-{m:02}-{d:02}");
    let dob = clock::parse_date("dob", &text)
        .unwrap_or_else(|_| clock::parse_date("dob", &format!("{y:04}-03-01")).expect("1 March"));
    assert_eq!(policy::age_on(dob, today), years, "test set-up: {dob}");
    dob.to_string()
}

/// The day after `date` (`YYYY-MM-DD`).
pub fn day_after(date: &str) -> String {
    clock::parse_date("date", date)
        .expect("a date")
        .next_day()
        .expect("a next day")
        .to_string()
}

/// A consent given personally, recorded by a caseworker with a form reference.
pub fn consent_request(
    subject: &pb::Subject,
    recipients: &[&str],
    purposes: &[pb::Purpose],
) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        subject: Some(subject.clone()),
        given_by: pb::ConsentGiver::Person as i32,
        guardian_name: String::new(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        valid_from_ms: 0,
        valid_until_ms: 0,
        evidence_reference: "Einwilligung/2026/0815 (unterschriebenes Formular)".into(),
        recorded_by: "Herr Jensen".into(),
        categories: EVERY_CATEGORY_BUT_HEALTH
            .iter()
            .map(|c| *c as i32)
            .collect(),
        legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
        form: pb::ConsentForm::Written as i32,
        evidence_sha256: vec![0x5a; 32],
        supersedes: String::new(),
        idempotency_key: String::new(),
    }
}

/// The categories a consent for the U25 and qualification flows names, without health data.
pub const EVERY_CATEGORY_BUT_HEALTH: [pb::DataCategory; 7] = [
    pb::DataCategory::Identity,
    pb::DataCategory::Address,
    pb::DataCategory::CaseReferences,
    pb::DataCategory::HousingSituation,
    pb::DataCategory::FamilySituation,
    pb::DataCategory::BenefitDecision,
    pb::DataCategory::EducationEmployment,
];

pub fn certification_request(subject: &pb::Subject, reason: &str) -> Body {
    Body::CertificationRequest(pb::CertificationRequest {
        subject: Some(subject.clone()),
        reason: reason.into(),
        respond_by: String::new(),
        caseworker: "Herr Jensen".into(),
    })
}

pub fn move_out_certification(subject: &pb::Subject) -> Body {
    Body::MoveOutCertification(pb::MoveOutCertification {
        subject: Some(subject.clone()),
        outcome: pb::CertificationOutcome::Supported as i32,
        ground: pb::MoveOutGround::SeriousSocialReasons as i32,
        statement: "Rückverweis in das Elternhaus nicht zumutbar.".into(),
        interview_date: today(),
        issuing_caseworker: "Frau Sievers".into(),
        health_note: String::new(),
    })
}

pub fn move_out_decision(subject: &pb::Subject) -> Body {
    Body::MoveOutDecision(pb::MoveOutDecision {
        subject: Some(subject.clone()),
        outcome: pb::DecisionOutcome::AssuranceGranted as i32,
        ground: pb::MoveOutGround::SeriousSocialReasons as i32,
        decision_date: today(),
        tenancy_contract_date: String::new(),
        caseworker: "Herr Jensen".into(),
    })
}

pub fn qualification_referral(subject: &pb::Subject) -> Body {
    Body::QualificationReferral(pb::QualificationReferral {
        subject: Some(subject.clone()),
        reason: "Ausbildungsabbruch; Unterstützung bei Berufsorientierung.".into(),
        measure: "Berufsvorbereitende Bildungsmaßnahme".into(),
        contact: "Frau Brandt, Jobcenter Kreis Segeberg".into(),
        respond_by: String::new(),
    })
}

pub fn referral_response(subject: &pb::Subject) -> Body {
    Body::ReferralResponse(pb::ReferralResponse {
        subject: Some(subject.clone()),
        outcome: pb::ReferralOutcome::Accepted as i32,
        note: "Erstgespräch vereinbart.".into(),
        caseworker: "Herr Ohlsen".into(),
    })
}

// ---- calls ----

pub async fn submit(
    client: &mut AgencyClient,
    to: &str,
    consent_id: &str,
    in_reply_to: &str,
    body: Body,
) -> Result<pb::SubmitResponse, Status> {
    submit_body(
        client,
        to,
        consent_id,
        in_reply_to,
        pb::MessageBody { body: Some(body) },
    )
    .await
}

/// Submits an arbitrary (possibly empty) message body.
pub async fn submit_body(
    client: &mut AgencyClient,
    to: &str,
    consent_id: &str,
    in_reply_to: &str,
    body: pb::MessageBody,
) -> Result<pb::SubmitResponse, Status> {
    client
        .submit(pb::SubmitRequest {
            recipient: to.into(),
            consent_id: consent_id.into(),
            in_reply_to: in_reply_to.into(),
            body: Some(body),
            idempotency_key: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Submits a message that must be accepted (QUEUED); returns its id.
pub async fn submit_ok(
    client: &mut AgencyClient,
    to: &str,
    consent_id: &str,
    body: Body,
) -> String {
    let r = submit(client, to, consent_id, "", body)
        .await
        .unwrap_or_else(|s| panic!("submission to {to} refused: {s:?}"));
    assert_eq!(r.state, pb::DeliveryState::Queued as i32);
    r.message_id
}

/// Records a consent; returns the record.
pub async fn record_consent(
    client: &mut AgencyClient,
    req: pb::RecordConsentRequest,
) -> pb::RecordConsentResponse {
    client
        .record_consent(req)
        .await
        .unwrap_or_else(|s| panic!("record consent: {s:?}"))
        .into_inner()
}

/// Records a consent; returns its id.
pub async fn consent_id(client: &mut AgencyClient, req: pb::RecordConsentRequest) -> String {
    record_consent(client, req)
        .await
        .consent
        .expect("the response carries the record")
        .consent_id
}

/// Records a consent and waits until it is in force at `recipient` (the consent's notice
/// delivered); returns its id.
pub async fn consent_in_force_at(
    client: &mut AgencyClient,
    recipient: &AgencyClient,
    req: pb::RecordConsentRequest,
) -> String {
    let id = consent_id(client, req).await;
    wait_for_consent_state(recipient, &id, pb::ConsentState::ConsentInForce).await;
    id
}

pub async fn status(client: &mut AgencyClient, message_id: &str) -> pb::MessageStatus {
    client
        .get_status(pb::GetStatusRequest {
            message_id: message_id.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("status of {message_id}: {s:?}"))
        .into_inner()
}

/// Every consent the node holds (all pages).
pub async fn list_consents(client: &mut AgencyClient) -> Vec<pb::ConsentEntry> {
    kurzdraht_client::all_consents(client)
        .await
        .unwrap_or_else(|s| panic!("list consents: {s:?}"))
}

/// Everything in the inbox after `after_seq` (no follow), in arrival order.
pub async fn read_inbox(client: &mut AgencyClient, after_seq: u64) -> Vec<pb::InboxItem> {
    read_inbox_with(
        client,
        pb::ReadInboxRequest {
            after_seq,
            follow: false,
            unacknowledged_only: false,
        },
    )
    .await
}

pub async fn read_inbox_with(
    client: &mut AgencyClient,
    req: pb::ReadInboxRequest,
) -> Vec<pb::InboxItem> {
    assert!(
        !req.follow,
        "read_inbox_with reads to the end; use follow = false"
    );
    let mut stream = client
        .read_inbox(req)
        .await
        .unwrap_or_else(|s| panic!("read inbox: {s:?}"))
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream
        .message()
        .await
        .unwrap_or_else(|s| panic!("inbox stream: {s:?}"))
    {
        items.push(item);
    }
    items
}

pub fn ids(items: &[pb::InboxItem]) -> Vec<String> {
    items.iter().map(|i| i.message_id.clone()).collect()
}

// ---- waiting ----

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most [`TIMEOUT`]; panics
/// naming `what` and the last observation (the `Err` text) if it never does.
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if started.elapsed() >= TIMEOUT => {
                panic!("timed out after {TIMEOUT:?} waiting until {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Checks for `period` (polling) that `probe` keeps returning `Ok`; panics with the first
/// `Err`. For asserting that something does *not* happen.
pub async fn assert_stays<F, Fut>(what: &str, period: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        if let Err(seen) = probe().await {
            panic!(
                "expected {what} to hold for {period:?}, but after {:?}: {seen}",
                started.elapsed()
            );
        }
        if started.elapsed() >= period {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The name of a `DeliveryState` value, for messages.
pub fn state_name(state: i32) -> &'static str {
    pb::DeliveryState::try_from(state).map_or("?", |s| s.as_str_name())
}

/// Waits until the message has left QUEUED; returns its final status.
pub async fn settle(client: &AgencyClient, message_id: &str) -> pb::MessageStatus {
    wait_until(&format!("message {message_id} leaves QUEUED"), || {
        let mut c = client.clone();
        async move {
            let s = status(&mut c, message_id).await;
            if s.state == pb::DeliveryState::Queued as i32 {
                Err(format!(
                    "QUEUED, {} attempts, detail {:?}",
                    s.attempts, s.detail
                ))
            } else {
                Ok(s)
            }
        }
    })
    .await
}

/// Waits until the message is in `state`; returns its status.
pub async fn wait_for_state(
    client: &AgencyClient,
    message_id: &str,
    state: pb::DeliveryState,
) -> pb::MessageStatus {
    let s = settle(client, message_id).await;
    assert_eq!(
        state_name(s.state),
        state.as_str_name(),
        "final state of {message_id} (detail {:?})",
        s.detail
    );
    s
}

/// Waits until the node of `client` holds consent `consent_id` in `state`.
pub async fn wait_for_consent_state(
    client: &AgencyClient,
    consent_id: &str,
    state: pb::ConsentState,
) -> pb::ConsentEntry {
    wait_until(
        &format!("consent {consent_id} is {} there", state.as_str_name()),
        || {
            let mut c = client.clone();
            async move {
                let all = list_consents(&mut c).await;
                match all.into_iter().find(|e| {
                    e.consent
                        .as_ref()
                        .is_some_and(|r| r.consent_id == consent_id)
                }) {
                    Some(e) if e.state == state as i32 => Ok(e),
                    Some(e) => Err(format!("state {:?}", pb::ConsentState::try_from(e.state))),
                    None => Err("not held".into()),
                }
            }
        },
    )
    .await
}

/// Waits until the inbox holds at least `len` items; returns all of them.
pub async fn wait_for_inbox_len(client: &AgencyClient, len: usize) -> Vec<pb::InboxItem> {
    wait_until(&format!("the inbox holds {len} items"), || {
        let mut c = client.clone();
        async move {
            let items = read_inbox(&mut c, 0).await;
            if items.len() >= len {
                Ok(items)
            } else {
                Err(format!("{} items", items.len()))
            }
        }
    })
    .await
}

// ---- assertions ----

/// Asserts a refusal with `code` and the `kurzdraht-reason` metadata `reason`; returns it.
pub fn expect_refusal<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}/{reason}, but it was accepted: {v:?}"),
        Err(s) => {
            assert_eq!(
                (s.code(), reason_of(&s)),
                (code, Some(reason)),
                "{what}: wrong refusal: {:?}",
                s.message()
            );
            s
        }
    }
}

/// Checks, independently of the sending node, that `status` carries a receipt signed by
/// `to`'s pinned key (from `from`'s directory) over the hash of the envelope exactly as `to`
/// holds it in `item`; returns the verified receipt.
pub fn verify_delivery(
    h: &Harness,
    from: &str,
    to: &str,
    status: &pb::MessageStatus,
    item: &pb::InboxItem,
) -> pb::Receipt {
    let keys = h
        .fed
        .config(from)
        .expect("sender config")
        .directory
        .get(to)
        .expect("receiver in the directory")
        .evidence_keys()
        .to_vec();
    let envelope = item
        .envelope
        .as_ref()
        .expect("the inbox item carries the envelope");
    let hash = envelope_hash(envelope);
    let receipt = status
        .receipt
        .as_ref()
        .expect("a delivered message has a receipt");
    verify_receipt(
        receipt,
        &keys,
        &ExpectedReceipt {
            message_id: &status.message_id,
            envelope_sha256: &hash,
            sender: from,
            receiver: to,
        },
    )
    .unwrap_or_else(|e| panic!("receipt of {} does not verify: {e}", status.message_id))
}

/// `n` distinct free loopback addresses.
pub fn free_addrs(n: usize) -> Vec<std::net::SocketAddr> {
    free_loopback_addrs(n).expect("free loopback ports")
}
