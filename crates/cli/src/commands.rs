//! The client commands an agency's IT staff (or scripts, with `--json`) use against their
//! own node: consents, sending each message kind, status, inbox, acknowledgement; and the
//! operators' `backup`, `reconcile` and `user` (an admin token).

use crate::exit;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
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
    pub(crate) fn key(self) -> String {
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
    /// The console's accounts on the running node (an admin token): add, new password,
    /// role, disable, list.
    User {
        #[command(flatten)]
        common: ClientArgs,
        #[command(subcommand)]
        command: crate::user_commands::UserCommand,
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
    Grant(GrantArgs),
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

/// The flags of `consent grant`.
#[derive(Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub(crate) subject: SubjectArgs,
    /// Who gave it.
    #[arg(long, value_enum, default_value = "person")]
    pub(crate) given_by: Giver,
    #[arg(long, default_value = "")]
    pub(crate) guardian_name: String,
    /// An agency that may receive data (repeat for each).
    #[arg(long = "recipient", required = true)]
    pub(crate) recipients: Vec<String>,
    /// A purpose (repeat for each).
    #[arg(long = "purpose", value_enum, required = true)]
    pub(crate) purposes: Vec<PurposeArg>,
    /// Last day of validity, YYYY-MM-DD, to its end in Germany (default: the node's
    /// default validity).
    #[arg(long)]
    pub(crate) valid_until: Option<String>,
    /// A category of data the consent covers (repeat for each).
    #[arg(long = "category", value_enum, required = true)]
    pub(crate) categories: Vec<CategoryArg>,
    #[arg(long, value_enum, default_value = "consent")]
    pub(crate) legal_basis: LegalBasisArg,
    /// How the consent was given.
    #[arg(long, value_enum)]
    pub(crate) form: FormArg,
    /// Reference of the signed consent form.
    #[arg(long)]
    pub(crate) evidence: String,
    /// The signed consent form (scan or signed PDF); its SHA-256 is recorded.
    #[arg(long)]
    pub(crate) evidence_file: PathBuf,
    /// An earlier consent recorded here that this one replaces.
    #[arg(long)]
    pub(crate) supersedes: Option<String>,
    #[arg(long)]
    pub(crate) recorded_by: String,
    #[command(flatten)]
    pub(crate) once: KeyArgs,
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
    pub(crate) fn to_pb(self) -> pb::DataCategory {
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
    pub(crate) to: String,
    /// The consent that covers this message.
    #[arg(long)]
    pub(crate) consent: String,
    /// The message this one answers.
    #[arg(long, default_value = "")]
    pub(crate) in_reply_to: String,
    #[command(flatten)]
    pub(crate) once: KeyArgs,
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
    pub(crate) fn to_subject(&self, agency: &str) -> pb::Subject {
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

impl CertOutcome {
    fn to_proto(self) -> i32 {
        match self {
            CertOutcome::Supported => pb::CertificationOutcome::Supported as i32,
            CertOutcome::NotSupported => pb::CertificationOutcome::NotSupported as i32,
            CertOutcome::NotCompetent => pb::CertificationOutcome::NotCompetentForwarded as i32,
        }
    }
}

impl DecisionArg {
    fn to_proto(self) -> i32 {
        match self {
            DecisionArg::Granted => pb::DecisionOutcome::AssuranceGranted as i32,
            DecisionArg::Refused => pb::DecisionOutcome::AssuranceRefused as i32,
            DecisionArg::Waived => pb::DecisionOutcome::AssuranceWaived as i32,
        }
    }
}

impl ReferralArg {
    fn to_proto(self) -> i32 {
        match self {
            ReferralArg::Accepted => pb::ReferralOutcome::Accepted as i32,
            ReferralArg::Declined => pb::ReferralOutcome::Declined as i32,
            ReferralArg::InProgress => pb::ReferralOutcome::InProgress as i32,
            ReferralArg::Finished => pb::ReferralOutcome::Finished as i32,
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

pub(crate) async fn client_from(args: &ClientArgs) -> anyhow::Result<(AgencyClient, ClientConfig)> {
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

/// Runs a state-changing call made with idempotency key `key`. When it fails in a way a
/// repeat may cure (the answer was lost, the node was unavailable), says on stderr how to
/// repeat it safely.
pub(crate) async fn keyed_call<T>(
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
    use crate::operator_commands as operator;
    use crate::{consent_commands as consent, message_commands as message};
    match command {
        ClientCommand::Consent { common, command } => consent::run(common, command).await,
        ClientCommand::Send { common, message } => message::send(common, message).await,
        ClientCommand::Status { common, message_id } => message::status(common, message_id).await,
        ClientCommand::Inbox {
            common,
            after,
            follow,
            unacknowledged,
            export,
        } => message::inbox(common, after, follow, unacknowledged, export).await,
        ClientCommand::Subject { common, command } => message::subject(common, command).await,
        ClientCommand::Ack { common, message_id } => message::ack(common, message_id).await,
        ClientCommand::Backup { common, out } => operator::backup(common, out).await,
        ClientCommand::User { common, command } => crate::user_commands::run(common, command).await,
        ClientCommand::Reconcile {
            common,
            peer,
            since,
        } => operator::reconcile(common, peer, since).await,
    }
}

impl SendCommand {
    pub(crate) fn into_body(self, agency: &str) -> (Routing, Body) {
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
                    outcome: outcome.to_proto(),
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
                    outcome: outcome.to_proto(),
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
                    outcome: outcome.to_proto(),
                    note,
                    caseworker,
                }),
            ),
        }
    }
}
