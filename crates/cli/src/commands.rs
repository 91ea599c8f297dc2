//! The client commands an agency's IT staff (or scripts, with `--json`) use against their
//! own node: consents, sending each message kind, status, inbox, acknowledgement; and the
//! operators' `backup` and `reconcile` (an admin token).

use crate::exit;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_node::clock;
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use std::path::PathBuf;
use std::process::ExitCode;
#[derive(Args)]
pub struct ClientArgs {
    /// The IT system's client.toml (written by `kurzdraht pki init`).
    #[arg(long, env = "KURZDRAHT_CLIENT", global = true)]
    pub(crate) client: Option<PathBuf>,
    /// Machine-readable JSON output: the answer in the canonical protobuf JSON mapping
    /// (lowerCamelCase names, enum names, base64 bytes, 64-bit integers as strings, default
    /// values printed), each `…Ms` time also as RFC 3339 (UTC) in a sibling without `Ms`.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The idempotency key of a state-changing command.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// The idempotency key of this call: 1 to 128 printable ASCII characters without spaces
    /// (default: a fresh one, printed). A command whose answer was lost (exit code 5) is
    /// repeated safely with the key it printed: the node gives the first answer and
    /// changes nothing.
    #[arg(long = "idempotency-key", value_name = "KEY")]
    idempotency_key: Option<String>,
}

impl KeyArgs {
    /// The key given, or a fresh one (a UUIDv7) for this invocation.
    fn key(self) -> String {
        self.idempotency_key
            .unwrap_or_else(kurzdraht_envelope::ids::new_id)
    }
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Record, withdraw and list consents.
    Consent {
        #[command(flatten)]
        common: ClientArgs,
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// Send a case message.
    Send {
        #[command(flatten)]
        common: ClientArgs,
        #[command(subcommand)]
        message: SendCommand,
    },
    /// Show where a submitted message is.
    Status {
        #[command(flatten)]
        common: ClientArgs,
        message_id: String,
    },
    /// Read the inbox.
    Inbox {
        #[command(flatten)]
        common: ClientArgs,
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep the stream open and print new messages as they arrive.
        #[arg(long)]
        follow: bool,
        /// Only messages not yet acknowledged.
        #[arg(long)]
        unacknowledged: bool,
        /// Export to this file as JSON lines (one inbox item each, as `--json` prints it),
        /// with progress on stderr, instead of listing.
        #[arg(long, conflicts_with = "follow")]
        export: Option<PathBuf>,
    },
    /// What this node holds about one person.
    Subject {
        #[command(flatten)]
        common: ClientArgs,
        #[command(subcommand)]
        command: SubjectCommand,
    },
    /// Acknowledge an inbox message.
    Ack {
        #[command(flatten)]
        common: ClientArgs,
        message_id: String,
    },
    /// Take a backup of the running node's whole store (an admin token): writes the archive
    /// to FILE, mode 0600 (to FILE.partial first, renamed once complete and checked).
    /// Restore it with `kurzdraht restore`.
    Backup {
        #[command(flatten)]
        common: ClientArgs,
        /// The archive to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Ask the peers what they delivered to this node and receive again what it no longer
    /// holds, e.g. after a restore by other means than `kurzdraht restore` (an admin token).
    Reconcile {
        #[command(flatten)]
        common: ClientArgs,
        /// Only this peer (an agency id); default: every peer.
        #[arg(long)]
        peer: Option<String>,
        /// Deliveries made since this time, RFC 3339 (`2026-05-01T00:00:00Z`); default:
        /// everything the peers still keep.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Args, Clone)]
pub struct SubjectArgs {
    #[arg(long)]
    given_name: String,
    #[arg(long)]
    family_name: String,
    /// YYYY-MM-DD
    #[arg(long)]
    date_of_birth: String,
    #[arg(long, default_value = "")]
    street: String,
    #[arg(long, default_value = "")]
    postal_code: String,
    #[arg(long, default_value = "")]
    city: String,
    /// This agency's own case reference.
    #[arg(long)]
    case_reference: Option<String>,
}

#[derive(Subcommand)]
pub enum ConsentCommand {
    /// Record a consent given at this agency.
    Grant {
        #[command(flatten)]
        subject: SubjectArgs,
        /// Who gave it.
        #[arg(long, value_enum, default_value = "person")]
        given_by: Giver,
        #[arg(long, default_value = "")]
        guardian_name: String,
        /// An agency that may receive data (repeat for each).
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
        /// A purpose (repeat for each).
        #[arg(long = "purpose", value_enum, required = true)]
        purposes: Vec<PurposeArg>,
        /// Last day of validity, YYYY-MM-DD, to its end in Germany (default: the node's
        /// default validity).
        #[arg(long)]
        valid_until: Option<String>,
        /// A category of data the consent covers (repeat for each).
        #[arg(long = "category", value_enum, required = true)]
        categories: Vec<CategoryArg>,
        #[arg(long, value_enum, default_value = "consent")]
        legal_basis: LegalBasisArg,
        /// How the consent was given.
        #[arg(long, value_enum)]
        form: FormArg,
        /// Reference of the signed consent form.
        #[arg(long)]
        evidence: String,
        /// The signed consent form (scan or signed PDF); its SHA-256 is recorded.
        #[arg(long)]
        evidence_file: PathBuf,
        /// An earlier consent recorded here that this one replaces.
        #[arg(long)]
        supersedes: Option<String>,
        #[arg(long)]
        recorded_by: String,
        #[command(flatten)]
        once: KeyArgs,
    },
    /// Record a withdrawal (effective for the future).
    Withdraw {
        consent_id: String,
        #[arg(long)]
        recorded_by: String,
        #[arg(long, default_value = "in writing")]
        manner: String,
        #[command(flatten)]
        once: KeyArgs,
    },
    /// List the consents this node holds, one page at a time (oldest first).
    List {
        /// Start after this consent id (the `next` printed under the previous page).
        #[arg(long, default_value = "")]
        after: String,
        /// Consents per page (at most 1000).
        #[arg(long, default_value_t = 500)]
        limit: u32,
    },
    /// Close the case a consent belongs to at this agency; its message bodies are deleted
    /// after the node's retention period.
    Close { consent_id: String },
    /// Show the consent (with the recording agency's signed notice) that allowed a message
    /// sent or received here, or a consent by id.
    Evidence {
        #[arg(long, conflicts_with = "consent", required_unless_present = "consent")]
        message: Option<String>,
        #[arg(long)]
        consent: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SubjectCommand {
    /// The Art. 15 GDPR access report: consents, messages sent and received under them, and
    /// refusals that cited them.
    Report {
        #[arg(long)]
        given_name: String,
        #[arg(long)]
        family_name: String,
        /// YYYY-MM-DD
        #[arg(long)]
        date_of_birth: String,
    },
    /// Art. 17 GDPR: remove the person's data from this node now (signed headers stay as proof).
    Erase {
        #[arg(long)]
        given_name: String,
        #[arg(long)]
        family_name: String,
        /// YYYY-MM-DD
        #[arg(long)]
        date_of_birth: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CategoryArg {
    Identity,
    Address,
    CaseReferences,
    HousingSituation,
    FamilySituation,
    BenefitDecision,
    EducationEmployment,
    Health,
}

impl CategoryArg {
    fn to_pb(self) -> pb::DataCategory {
        match self {
            Self::Identity => pb::DataCategory::Identity,
            Self::Address => pb::DataCategory::Address,
            Self::CaseReferences => pb::DataCategory::CaseReferences,
            Self::HousingSituation => pb::DataCategory::HousingSituation,
            Self::FamilySituation => pb::DataCategory::FamilySituation,
            Self::BenefitDecision => pb::DataCategory::BenefitDecision,
            Self::EducationEmployment => pb::DataCategory::EducationEmployment,
            Self::Health => pb::DataCategory::Health,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LegalBasisArg {
    /// Art. 6(1)(a) GDPR with § 67b SGB X
    Consent,
    /// Art. 9(2)(a) GDPR, needed for health data
    ExplicitConsent,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormArg {
    Written,
    Electronic,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Giver {
    Person,
    Guardian,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PurposeArg {
    U25MoveOut,
    QualificationMeasure,
}

#[derive(Args)]
pub struct Routing {
    /// Recipient agency id.
    #[arg(long)]
    to: String,
    /// The consent that covers this message.
    #[arg(long)]
    consent: String,
    /// The message this one answers.
    #[arg(long, default_value = "")]
    in_reply_to: String,
    #[command(flatten)]
    once: KeyArgs,
}

#[derive(Subcommand)]
pub enum SendCommand {
    /// Jobcenter asks the Jugendamt for its statement on a move-out.
    CertificationRequest {
        #[command(flatten)]
        routing: Routing,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        respond_by: String,
        #[arg(long)]
        caseworker: String,
    },
    /// Jugendamt's statement on a move-out (§ 22 Abs. 5 SGB II).
    MoveOutCertification {
        #[command(flatten)]
        routing: Routing,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long, value_enum)]
        outcome: CertOutcome,
        #[arg(long, value_enum)]
        ground: Option<Ground>,
        #[arg(long)]
        statement: String,
        #[arg(long)]
        interview_date: String,
        #[arg(long)]
        caseworker: String,
        /// Health information (needs a consent covering the health category).
        #[arg(long)]
        health_note: Option<String>,
    },
    /// Jobcenter's decision on the assurance.
    MoveOutDecision {
        #[command(flatten)]
        routing: Routing,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long, value_enum)]
        outcome: DecisionArg,
        #[arg(long, value_enum)]
        ground: Option<Ground>,
        #[arg(long)]
        decision_date: String,
        #[arg(long, default_value = "")]
        tenancy_contract_date: String,
        #[arg(long)]
        caseworker: String,
    },
    /// Jobcenter refers a young person to a qualification measure.
    QualificationReferral {
        #[command(flatten)]
        routing: Routing,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        measure: String,
        #[arg(long)]
        contact: String,
        #[arg(long, default_value = "")]
        respond_by: String,
    },
    /// Jugendamt's answer to a referral.
    ReferralResponse {
        #[command(flatten)]
        routing: Routing,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long, value_enum)]
        outcome: ReferralArg,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        caseworker: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CertOutcome {
    Supported,
    NotSupported,
    NotCompetent,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Ground {
    /// Nr. 1: serious social reasons
    SeriousSocialReasons,
    /// Nr. 2: needed to enter work
    LabourMarket,
    /// Nr. 3: a similarly serious reason
    OtherSerious,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Granted,
    Refused,
    Waived,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReferralArg {
    Accepted,
    Declined,
    InProgress,
    Finished,
}

impl SubjectArgs {
    fn to_subject(&self, agency: &str) -> pb::Subject {
        pb::Subject {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            date_of_birth: self.date_of_birth.clone(),
            address: Some(pb::Address {
                street: self.street.clone(),
                postal_code: self.postal_code.clone(),
                city: self.city.clone(),
            }),
            case_references: self
                .case_reference
                .iter()
                .map(|r| pb::CaseReference {
                    agency: agency.to_string(),
                    reference: r.clone(),
                })
                .collect(),
        }
    }
}

fn ground(g: Option<Ground>) -> i32 {
    match g {
        None => 0,
        Some(Ground::SeriousSocialReasons) => pb::MoveOutGround::SeriousSocialReasons as i32,
        Some(Ground::LabourMarket) => pb::MoveOutGround::LabourMarketIntegration as i32,
        Some(Ground::OtherSerious) => pb::MoveOutGround::OtherSeriousReason as i32,
    }
}

async fn client_from(args: &ClientArgs) -> anyhow::Result<(AgencyClient, ClientConfig)> {
    let path = args
        .client
        .as_ref()
        .context("name the IT system's client.toml with --client FILE (or KURZDRAHT_CLIENT)")?;
    let config = ClientConfig::load(path)?;
    let client = connect(&config)
        .await
        .with_context(|| format!("cannot reach the node at {}", config.endpoint))?;
    Ok((client, config))
}

/// An answer of the node as JSON: the canonical protobuf JSON mapping (`kurzdraht-proto`'s
/// `serde` feature: lowerCamelCase names, enum value names, base64 bytes, 64-bit integers as
/// strings, fields with default values printed too), plus for every timestamp field
/// `…Ms` (milliseconds since the Unix epoch) that is not 0 a sibling without the `Ms` suffix
/// holding the same instant in RFC 3339 (UTC), e.g. `"validUntil": "2027-04-30T21:59:59.999Z"`.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<serde_json::Value> {
    let mut json = serde_json::to_value(value)?;
    add_rfc3339_times(&mut json);
    Ok(json)
}

/// Adds the RFC 3339 sibling of every non-zero `…Ms` timestamp, at every depth. A sibling
/// never replaces a field of the message (none is named like one; see the test).
fn add_rfc3339_times(json: &mut serde_json::Value) {
    use serde_json::Value;
    match json {
        Value::Object(fields) => {
            let times: Vec<(String, String)> = fields
                .iter()
                .filter_map(|(name, value)| {
                    let at = name.strip_suffix("Ms").filter(|at| !at.is_empty())?;
                    let ms: i64 = value.as_str()?.parse().ok()?;
                    if ms == 0 || fields.contains_key(at) {
                        return None;
                    }
                    Some((at.to_string(), rfc3339_of_ms(ms)?))
                })
                .collect();
            for value in fields.values_mut() {
                add_rfc3339_times(value);
            }
            for (at, time) in times {
                fields.insert(at, Value::String(time));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_rfc3339_times),
        _ => {}
    }
}

/// `ms` (since the Unix epoch) in RFC 3339, UTC, with milliseconds where they are not 0.
pub(crate) fn rfc3339_of_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&to_json(value)?)?);
    Ok(())
}

/// The answer as JSON with the idempotency key it was given under (`idempotencyKey`).
fn print_keyed_json<T: serde::Serialize>(value: &T, key: &str) -> anyhow::Result<()> {
    let mut json = to_json(value)?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("idempotencyKey".into(), key.into());
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Runs a state-changing call made with idempotency key `key`. When it fails in a way a
/// repeat may cure (the answer was lost, the node was unavailable), says on stderr how to
/// repeat it safely.
async fn keyed_call<T>(
    key: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match call.await {
        Ok(answer) => Ok(answer.into_inner()),
        Err(status) => {
            let reason = kurzdraht_client::status::reason_of(&status);
            if kurzdraht_client::status::retry_class(status.code(), reason)
                == kurzdraht_client::status::Retry::Transient
            {
                eprintln!(
                    "idempotency-key: {key}\nrepeat the same command with --idempotency-key {key}: \
                     if the node did it, it answers as the first time and does nothing again"
                );
            }
            Err(status.into())
        }
    }
}

/// Runs a client command; a refusal by the node prints its reason and picks the exit code.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match run_inner(command).await {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<tonic::Status>() {
            Ok(status) => {
                let reason = kurzdraht_client::status::reason_of(&status).unwrap_or("-");
                eprintln!(
                    "refused: {:?}: {} (reason: {reason})",
                    status.code(),
                    status.message()
                );
                Ok(exit::for_status(&status))
            }
            Err(e) => Err(e),
        },
    }
}

async fn run_inner(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Consent { common, command } => {
            let (mut client, config) = client_from(&common).await?;
            match command {
                ConsentCommand::Grant {
                    subject,
                    given_by,
                    guardian_name,
                    recipients,
                    purposes,
                    valid_until,
                    categories,
                    legal_basis,
                    form,
                    evidence,
                    evidence_file,
                    supersedes,
                    recorded_by,
                    once,
                } => {
                    let key = once.key();
                    let form_bytes = std::fs::read(&evidence_file).with_context(|| {
                        format!("cannot read --evidence-file {}", evidence_file.display())
                    })?;
                    let evidence_sha256 = {
                        use sha2::Digest;
                        sha2::Sha256::digest(&form_bytes).to_vec()
                    };
                    // the last millisecond of that day in Germany
                    let valid_until_ms = match valid_until {
                        Some(d) => {
                            let last_day = clock::parse_date("--valid-until", &d)?;
                            let next_day = last_day
                                .next_day()
                                .context("--valid-until lies too far in the future")?;
                            clock::german_start_of_day_ms(next_day) - 1
                        }
                        None => 0,
                    };
                    let req = pb::RecordConsentRequest {
                        subject: Some(subject.to_subject(&config.agency)),
                        given_by: match given_by {
                            Giver::Person => pb::ConsentGiver::Person as i32,
                            Giver::Guardian => pb::ConsentGiver::Guardian as i32,
                        },
                        guardian_name,
                        recipients,
                        purposes: purposes
                            .iter()
                            .map(|p| match p {
                                PurposeArg::U25MoveOut => pb::Purpose::U25MoveOut as i32,
                                PurposeArg::QualificationMeasure => {
                                    pb::Purpose::QualificationMeasure as i32
                                }
                            })
                            .collect(),
                        valid_from_ms: 0,
                        valid_until_ms,
                        evidence_reference: evidence,
                        recorded_by,
                        categories: categories.iter().map(|c| c.to_pb() as i32).collect(),
                        legal_basis: match legal_basis {
                            LegalBasisArg::Consent => pb::LegalBasis::ConsentGdpr61ASgbX67b,
                            LegalBasisArg::ExplicitConsent => {
                                pb::LegalBasis::ExplicitConsentGdpr92A
                            }
                        } as i32,
                        form: match form {
                            FormArg::Written => pb::ConsentForm::Written,
                            FormArg::Electronic => pb::ConsentForm::Electronic,
                        } as i32,
                        evidence_sha256,
                        supersedes: supersedes.unwrap_or_default(),
                        idempotency_key: key.clone(),
                    };
                    let resp = keyed_call(&key, client.record_consent(req)).await?;
                    if common.json {
                        print_keyed_json(&resp, &key)?;
                    } else if let Some(c) = &resp.consent {
                        println!(
                            "consent {} recorded, valid until {}",
                            c.consent_id,
                            clock::format_ms(c.valid_until_ms)
                        );
                        for id in &resp.notice_message_ids {
                            println!("  notice queued: {id}");
                        }
                        println!("  idempotency key: {key}");
                    }
                }
                ConsentCommand::Withdraw {
                    consent_id,
                    recorded_by,
                    manner,
                    once,
                } => {
                    let key = once.key();
                    let req = pb::WithdrawConsentRequest {
                        consent_id,
                        recorded_by,
                        manner,
                        idempotency_key: key.clone(),
                    };
                    let resp = keyed_call(&key, client.withdraw_consent(req)).await?;
                    if common.json {
                        print_keyed_json(&resp, &key)?;
                    } else {
                        println!(
                            "consent withdrawn; {} notice(s) queued (idempotency key {key})",
                            resp.notice_message_ids.len()
                        );
                    }
                }
                ConsentCommand::Close { consent_id } => {
                    let r = client
                        .close_case(pb::CloseCaseRequest { consent_id })
                        .await?
                        .into_inner();
                    if common.json {
                        print_json(&r)?;
                    } else {
                        println!(
                            "case closed at {}; message bodies deleted after {}",
                            clock::format_ms(r.closed_at_ms),
                            clock::format_ms(r.bodies_deleted_after_ms)
                        );
                    }
                }
                ConsentCommand::Evidence { message, consent } => {
                    use pb::get_consent_evidence_request::About;
                    let about = match (message, consent) {
                        (Some(m), _) => About::MessageId(m),
                        (None, Some(c)) => About::ConsentId(c),
                        (None, None) => anyhow::bail!("give --message or --consent"),
                    };
                    let e = client
                        .get_consent_evidence(pb::GetConsentEvidenceRequest { about: Some(about) })
                        .await?
                        .into_inner();
                    if common.json {
                        print_json(&e)?;
                    } else if let Some(c) = &e.consent {
                        let state = pb::ConsentState::try_from(e.state)
                            .map(|s| s.as_str_name())
                            .unwrap_or("?");
                        println!("consent {} ({state})", c.consent_id);
                        println!(
                            "  recorded by {} ({}) at {}",
                            c.recording_agency,
                            c.recorded_by,
                            clock::format_ms(c.recorded_at_ms)
                        );
                        println!("  recipients {}", c.recipients.join(", "));
                        println!(
                            "  valid {} – {}",
                            clock::format_ms(c.valid_from_ms),
                            clock::format_ms(c.valid_until_ms)
                        );
                        println!(
                            "  evidence {} (sha256 {})",
                            c.evidence_reference,
                            hex::encode(&c.evidence_sha256)
                        );
                        if let Some(w) = &e.withdrawal {
                            println!(
                                "  withdrawn at {} ({}, {})",
                                clock::format_ms(w.withdrawn_at_ms),
                                w.recorded_by,
                                w.manner
                            );
                        }
                        if !e.superseded_by.is_empty() {
                            println!("  superseded by {}", e.superseded_by);
                        }
                        if e.signature_verified {
                            println!(
                                "  signed notice: signature verified against a key the directory pins for {}",
                                c.recording_agency
                            );
                        } else {
                            println!("  signed notice: NOT verified: {}", e.signature_problem);
                        }
                    }
                    if !e.signature_verified {
                        eprintln!(
                            "error: the consent's signed notice does not verify: {}",
                            e.signature_problem
                        );
                        return Ok(exit::unverified());
                    }
                }
                ConsentCommand::List { after, limit } => {
                    let resp = client
                        .list_consents(pb::ListConsentsRequest { after, limit })
                        .await?
                        .into_inner();
                    if common.json {
                        print_json(&resp)?;
                    } else {
                        for e in &resp.consents {
                            let Some(c) = &e.consent else { continue };
                            let state = pb::ConsentState::try_from(e.state)
                                .map(|s| s.as_str_name())
                                .unwrap_or("?");
                            println!(
                                "{}  {:<20} recorded by {} for {} until {}",
                                c.consent_id,
                                state,
                                c.recording_agency,
                                c.recipients.join(", "),
                                clock::format_ms(c.valid_until_ms)
                            );
                        }
                        if !resp.next_after.is_empty() {
                            println!("next page: consent list --after {}", resp.next_after);
                        }
                    }
                }
            }
        }
        ClientCommand::Send { common, message } => {
            let (mut client, config) = client_from(&common).await?;
            let (routing, body) = message.into_body(&config.agency);
            let key = routing.once.key();
            let req = pb::SubmitRequest {
                recipient: routing.to,
                consent_id: routing.consent,
                in_reply_to: routing.in_reply_to,
                body: Some(pb::MessageBody { body: Some(body) }),
                idempotency_key: key.clone(),
            };
            let resp = keyed_call(&key, client.submit(req)).await?;
            if common.json {
                print_keyed_json(&resp, &key)?;
            } else {
                println!(
                    "{} queued (durable in the outbox; idempotency key {key})",
                    resp.message_id
                );
            }
        }
        ClientCommand::Status { common, message_id } => {
            let (mut client, _) = client_from(&common).await?;
            let s = client
                .get_status(pb::GetStatusRequest { message_id })
                .await?
                .into_inner();
            if common.json {
                print_json(&s)?;
            } else {
                let state = pb::DeliveryState::try_from(s.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                println!(
                    "{} to {}: {state} after {} attempt(s){}{}",
                    s.message_id,
                    s.recipient,
                    s.attempts,
                    if s.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", s.detail)
                    },
                    if s.receipt.is_some() {
                        "; signed receipt held"
                    } else {
                        ""
                    }
                );
            }
        }
        ClientCommand::Inbox {
            common,
            after,
            follow,
            unacknowledged,
            export,
        } => {
            let (mut client, _) = client_from(&common).await?;
            if let Some(path) = export {
                return export_inbox(&mut client, after, unacknowledged, &path).await;
            }
            let mut stream = client
                .read_inbox(pb::ReadInboxRequest {
                    after_seq: after,
                    follow,
                    unacknowledged_only: unacknowledged,
                })
                .await?
                .into_inner();
            let mut n = 0u64;
            while let Some(item) = stream.message().await? {
                n += 1;
                if common.json {
                    println!("{}", serde_json::to_string(&to_json(&item)?)?);
                } else if let Some(n) = &item.notice {
                    let state = pb::DeliveryState::try_from(n.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?");
                    println!(
                        "#{} notice: {} to {} was not delivered: {state} — {}",
                        item.seq, n.message_id, n.recipient, n.detail
                    );
                } else {
                    let kind = pb::MessageKind::try_from(item.kind)
                        .map(|k| k.as_str_name())
                        .unwrap_or("?");
                    println!(
                        "#{} {} {kind} from {} at {}{}",
                        item.seq,
                        item.message_id,
                        item.sender,
                        clock::format_ms(item.received_at_ms),
                        if item.acknowledged {
                            " (acknowledged)"
                        } else {
                            ""
                        }
                    );
                }
            }
            if !common.json {
                eprintln!("{n} message(s)");
            }
        }
        ClientCommand::Subject {
            common,
            command:
                SubjectCommand::Report {
                    given_name,
                    family_name,
                    date_of_birth,
                },
        } => {
            let (mut client, _) = client_from(&common).await?;
            let report = client
                .subject_access_report(pb::SubjectAccessRequest {
                    given_name,
                    family_name,
                    date_of_birth,
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&report)?;
            } else {
                print!("{}", render_report(&report));
            }
        }
        ClientCommand::Subject {
            common,
            command:
                SubjectCommand::Erase {
                    given_name,
                    family_name,
                    date_of_birth,
                },
        } => {
            let (mut client, _) = client_from(&common).await?;
            let r = client
                .erase_subject(pb::SubjectAccessRequest {
                    given_name,
                    family_name,
                    date_of_birth,
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&r)?;
            } else {
                println!(
                    "erased from {} consent(s); {} message bod(ies) deleted; signed headers kept as proof",
                    r.consent_ids.len(),
                    r.bodies_erased
                );
            }
        }
        ClientCommand::Backup { common, out } => {
            let (mut client, _) = client_from(&common).await?;
            let written = write_backup(&mut client, &out).await?;
            if common.json {
                print_json(&serde_json::json!({
                    "file": out.display().to_string(),
                    "bytes": written.bytes.to_string(),
                    "agency": written.manifest.agency,
                    "takenAtMs": written.manifest.taken_at_ms.to_string(),
                }))?;
            } else {
                println!(
                    "backup of {} taken at {} written to {} ({} bytes, mode 0600)",
                    written.manifest.agency,
                    rfc3339_of_ms(written.manifest.taken_at_ms).unwrap_or_default(),
                    out.display(),
                    written.bytes
                );
            }
        }
        ClientCommand::Reconcile {
            common,
            peer,
            since,
        } => {
            let since_ms = match since {
                None => 0,
                Some(text) => parse_rfc3339_ms("--since", &text)?,
            };
            let (mut client, _) = client_from(&common).await?;
            let r = client
                .reconcile(pb::ReconcileRequest {
                    peer: peer.unwrap_or_default(),
                    since_ms,
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&r)?;
            } else {
                for p in &r.peers {
                    println!(
                        "{}: listed {}, held already {}, received again {}, refused {}, unavailable {}{}{}",
                        p.peer,
                        p.listed,
                        p.held,
                        p.received,
                        p.refused,
                        p.unavailable,
                        match p.sent_listed {
                            0 => String::new(),
                            n => format!(
                                "; sent by this node: listed {n}, withdrawals recorded again {}, consents recorded again {}, messages recorded again {}, unavailable {}",
                                p.withdrawals_restored,
                                p.consents_restored,
                                p.messages_restored,
                                p.sent_unavailable
                            ),
                        },
                        match p.error.as_str() {
                            "" => String::new(),
                            e => format!(" — stopped: {e}; run it again"),
                        }
                    );
                }
            }
            if r.peers.iter().any(|p| !p.error.is_empty()) {
                return Ok(ExitCode::from(5));
            }
        }
        ClientCommand::Ack { common, message_id } => {
            let (mut client, _) = client_from(&common).await?;
            let r = client
                .acknowledge(pb::AcknowledgeRequest {
                    message_id: message_id.clone(),
                })
                .await?
                .into_inner();
            if common.json {
                print_json(&r)?;
            } else {
                println!("{message_id} acknowledged");
            }
        }
    }
    Ok(exit::OK)
}

/// A backup written by [`write_backup`].
struct WrittenBackup {
    bytes: u64,
    manifest: kurzdraht_ledger::BackupManifest,
}

/// Streams the node's backup into `out`: into `out.partial` (created mode 0600; neither
/// may exist), fsynced and checked whole (form and SHA-256), then renamed.
async fn write_backup(
    client: &mut AgencyClient,
    out: &std::path::Path,
) -> anyhow::Result<WrittenBackup> {
    use std::io::Write;
    if out.exists() {
        anyhow::bail!("{} exists; name a new file", out.display());
    }
    let mut partial_name = out.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    let mut file = kurzdraht_node::service::backup::create_private(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written = async {
        let mut stream = client.backup(pb::BackupRequest {}).await?.into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let manifest = kurzdraht_ledger::backup::check(&partial)
            .context("the archive received is not complete")?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        anyhow::Ok(WrittenBackup { bytes, manifest })
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Milliseconds since 1970 of an RFC 3339 time given as `flag`.
fn parse_rfc3339_ms(flag: &str, text: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            kurzdraht_node::NodeError::invalid(
                flag,
                format!("is no RFC 3339 time ({e}), e.g. 2026-05-01T00:00:00Z"),
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// How often an export reports progress.
const PROGRESS_EVERY: u64 = 250;

/// Writes the inbox as JSON lines to `path` (to a temporary file first, renamed when
/// complete, so a broken export never looks finished), reporting progress on stderr.
async fn export_inbox(
    client: &mut AgencyClient,
    after: u64,
    unacknowledged: bool,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?,
    );
    let mut stream = client
        .read_inbox(pb::ReadInboxRequest {
            after_seq: after,
            follow: false,
            unacknowledged_only: unacknowledged,
        })
        .await?
        .into_inner();
    let started = std::time::Instant::now();
    let mut n = 0u64;
    let mut last_seq = after;
    while let Some(item) = stream.message().await? {
        serde_json::to_writer(&mut out, &to_json(&item)?)?;
        out.write_all(b"\n")?;
        n += 1;
        last_seq = item.seq;
        if n.is_multiple_of(PROGRESS_EVERY) {
            eprintln!(
                "exported {n} messages (up to #{last_seq}), {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush()?;
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?
        .sync_all()?;
    std::fs::rename(&partial, path)?;
    eprintln!(
        "exported {n} messages to {} (next export: --after {last_seq})",
        path.display()
    );
    Ok(exit::OK)
}

impl SendCommand {
    fn into_body(self, agency: &str) -> (Routing, Body) {
        match self {
            SendCommand::CertificationRequest {
                routing,
                subject,
                reason,
                respond_by,
                caseworker,
            } => (
                routing,
                Body::CertificationRequest(pb::CertificationRequest {
                    subject: Some(subject.to_subject(agency)),
                    reason,
                    respond_by,
                    caseworker,
                }),
            ),
            SendCommand::MoveOutCertification {
                routing,
                subject,
                outcome,
                ground: g,
                statement,
                interview_date,
                caseworker,
                health_note,
            } => (
                routing,
                Body::MoveOutCertification(pb::MoveOutCertification {
                    subject: Some(subject.to_subject(agency)),
                    outcome: match outcome {
                        CertOutcome::Supported => pb::CertificationOutcome::Supported as i32,
                        CertOutcome::NotSupported => pb::CertificationOutcome::NotSupported as i32,
                        CertOutcome::NotCompetent => {
                            pb::CertificationOutcome::NotCompetentForwarded as i32
                        }
                    },
                    ground: ground(g),
                    statement,
                    interview_date,
                    issuing_caseworker: caseworker,
                    health_note: health_note.unwrap_or_default(),
                }),
            ),
            SendCommand::MoveOutDecision {
                routing,
                subject,
                outcome,
                ground: g,
                decision_date,
                tenancy_contract_date,
                caseworker,
            } => (
                routing,
                Body::MoveOutDecision(pb::MoveOutDecision {
                    subject: Some(subject.to_subject(agency)),
                    outcome: match outcome {
                        DecisionArg::Granted => pb::DecisionOutcome::AssuranceGranted as i32,
                        DecisionArg::Refused => pb::DecisionOutcome::AssuranceRefused as i32,
                        DecisionArg::Waived => pb::DecisionOutcome::AssuranceWaived as i32,
                    },
                    ground: ground(g),
                    decision_date,
                    tenancy_contract_date,
                    caseworker,
                }),
            ),
            SendCommand::QualificationReferral {
                routing,
                subject,
                reason,
                measure,
                contact,
                respond_by,
            } => (
                routing,
                Body::QualificationReferral(pb::QualificationReferral {
                    subject: Some(subject.to_subject(agency)),
                    reason,
                    measure,
                    contact,
                    respond_by,
                }),
            ),
            SendCommand::ReferralResponse {
                routing,
                subject,
                outcome,
                note,
                caseworker,
            } => (
                routing,
                Body::ReferralResponse(pb::ReferralResponse {
                    subject: Some(subject.to_subject(agency)),
                    outcome: match outcome {
                        ReferralArg::Accepted => pb::ReferralOutcome::Accepted as i32,
                        ReferralArg::Declined => pb::ReferralOutcome::Declined as i32,
                        ReferralArg::InProgress => pb::ReferralOutcome::InProgress as i32,
                        ReferralArg::Finished => pb::ReferralOutcome::Finished as i32,
                    },
                    note,
                    caseworker,
                }),
            ),
        }
    }
}

/// The access report as text for the person concerned.
pub fn render_report(r: &pb::SubjectAccessReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Access report (Art. 15 GDPR) of {} at {}",
        r.agency,
        clock::format_ms(r.generated_at_ms)
    );
    let _ = writeln!(out, "Consents ({}):", r.consents.len());
    for e in &r.consents {
        let Some(c) = &e.consent else { continue };
        let state = pb::ConsentState::try_from(e.state)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        let purposes: Vec<&str> = c
            .purposes
            .iter()
            .filter_map(|p| pb::Purpose::try_from(*p).ok().map(|p| p.as_str_name()))
            .collect();
        let categories: Vec<&str> = c
            .categories
            .iter()
            .filter_map(|p| pb::DataCategory::try_from(*p).ok().map(|p| p.as_str_name()))
            .collect();
        let _ = writeln!(
            out,
            "  {} {state}: recorded by {} on {}, for {} to {}, covering {}",
            c.consent_id,
            c.recording_agency,
            clock::format_ms(c.recorded_at_ms),
            purposes.join(", "),
            c.recipients.join(", "),
            categories.join(", ")
        );
    }
    let _ = writeln!(out, "Messages ({}):", r.messages.len());
    for m in &r.messages {
        let kind = pb::MessageKind::try_from(m.kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        let state = if m.direction == "sent" {
            pb::DeliveryState::try_from(m.state)
                .map(|s| format!(" ({})", s.as_str_name()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let arrow = if m.direction == "sent" { "to" } else { "from" };
        let _ = writeln!(
            out,
            "  {} {kind} {} {arrow} {}{state} under consent {}",
            clock::format_ms(m.at_ms),
            m.direction,
            m.counterpart,
            m.consent_id
        );
    }
    let _ = writeln!(out, "Refusals ({}):", r.refusals.len());
    for f in &r.refusals {
        let kind = pb::MessageKind::try_from(f.kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "  {} {} {kind} ({}) {} under consent {}",
            clock::format_ms(f.at_ms),
            f.event,
            f.reason,
            f.counterpart,
            f.consent_id
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_nonzero_ms_time_gets_an_rfc3339_sibling_at_every_depth() {
        let mut v = json!({
            "createdAtMs": "1795950777743",
            "validFromMs": "0",
            "attempts": 3,
            "nested": {"atMs": "1700000000000", "at": "kept"},
            "items": [{"receivedAtMs": "-1000"}, {"closedAtMs": "not a number"}],
            "Ms": "5",
        });
        add_rfc3339_times(&mut v);
        assert_eq!(
            v,
            json!({
                "createdAtMs": "1795950777743",
                "createdAt": "2026-11-29T11:12:57.743Z",
                "validFromMs": "0",
                "attempts": 3,
                "nested": {"atMs": "1700000000000", "at": "kept"},
                "items": [
                    {"receivedAtMs": "-1000", "receivedAt": "1969-12-31T23:59:59Z"},
                    {"closedAtMs": "not a number"}
                ],
                "Ms": "5",
            })
        );
    }

    /// The canonical mapping of a whole answer: enum names, base64 bytes, int64 as strings,
    /// default values printed, lowerCamelCase names.
    #[test]
    fn answers_print_in_the_canonical_mapping() {
        let status = pb::MessageStatus {
            message_id: "m".into(),
            state: pb::DeliveryState::Delivered as i32,
            updated_at_ms: 1_795_950_777_000,
            receipt: Some(pb::SignedReceipt {
                receipt: vec![0xff, 0x00, 0x10],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_json(&status).expect("test");
        assert_eq!(v["messageId"], "m");
        assert_eq!(v["state"], "DELIVERED");
        assert_eq!(v["updatedAtMs"], "1795950777000");
        assert_eq!(v["updatedAt"], "2026-11-29T11:12:57Z");
        assert_eq!(v["receipt"]["receipt"], "/wAQ");
        assert_eq!(v["attempts"], 0, "default values are printed");
        assert_eq!(v["kind"], "MESSAGE_KIND_UNSPECIFIED");
        assert!(v.get("submittedAt").is_none(), "no sibling for 0");
    }
}
