//! The node's one error type, and the one place where errors become gRPC statuses.
//!
//! Every status carries the `kurzdraht-reason` metadata with a stable reason code, so IT
//! systems can act on a refusal without parsing text. Messages name fields and reasons,
//! never personal data or secrets.

use kurzdraht_envelope::EnvelopeError;
use kurzdraht_ledger::{ConsentRefusal, LedgerError};
use tonic::{Code, Status};

/// The metadata key that carries a refusal's reason code.
pub const REASON_METADATA: &str = "kurzdraht-reason";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Consent(ConsentRefusal),
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Not done this time, nothing changed; the caller should try again.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A status watcher fell too far behind; its stream ends.
    #[error("aborted: {0}")]
    Lagged(String),
    #[error("configuration: {key}: {reason}")]
    Config { key: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl NodeError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The stable reason code (also used in the audit chain).
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission-denied",
            Self::Consent(r) => r.code(),
            Self::Invalid { .. } => "invalid-argument",
            Self::FailedPrecondition(_) => "failed-precondition",
            Self::NotFound(_) => "not-found",
            Self::ResourceExhausted(_) => "rate-limited",
            Self::Aborted(_) => "retry",
            Self::Lagged(_) => "watch-lagged",
            Self::Config { .. } => "config",
            Self::Tls(_) => "tls",
            Self::Io(_) => "io",
            Self::Transport(_) => "transport",
            Self::Envelope(e) => match e {
                EnvelopeError::TooLarge { .. } => "too-large",
                EnvelopeError::BadSignature { .. } => "bad-signature",
                EnvelopeError::Malformed { .. } => "malformed",
                EnvelopeError::PayloadHashMismatch => "payload-hash-mismatch",
                EnvelopeError::SenderMismatch { .. } => "sender-mismatch",
                EnvelopeError::KindMismatch { .. } => "kind-mismatch",
                EnvelopeError::ReceiptMismatch { .. } => "receipt-mismatch",
            },
            Self::Ledger(e) => match e {
                LedgerError::Locked { .. } => "store-locked",
                LedgerError::ConsentExists { .. } => "consent-exists",
                LedgerError::UnknownConsent { .. } => "no-consent",
                LedgerError::AlreadyWithdrawn { .. } => "consent-withdrawn",
                LedgerError::AlreadySuperseded { .. } => "consent-superseded",
                LedgerError::MessageIdConflict { .. } => "message-id-conflict",
                LedgerError::UnknownMessage { .. } => "not-found",
                LedgerError::Store(_)
                | LedgerError::Io { .. }
                | LedgerError::Task { .. }
                | LedgerError::Corrupt { .. }
                | LedgerError::AuditBroken { .. }
                | LedgerError::NoDataKey
                | LedgerError::BadDataKey { .. }
                | LedgerError::NewerStore { .. } => "store",
            },
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Consent(_) | Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Invalid { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Aborted(_) | Self::Lagged(_) => Code::Aborted,
            Self::Config { .. } | Self::Tls(_) | Self::Io(_) | Self::Transport(_) => Code::Internal,
            Self::Envelope(e) => match e {
                EnvelopeError::TooLarge { .. } => Code::ResourceExhausted,
                EnvelopeError::BadSignature { .. } | EnvelopeError::PayloadHashMismatch => {
                    Code::Unauthenticated
                }
                EnvelopeError::SenderMismatch { .. } => Code::PermissionDenied,
                EnvelopeError::Malformed { .. } | EnvelopeError::KindMismatch { .. } => {
                    Code::InvalidArgument
                }
                EnvelopeError::ReceiptMismatch { .. } => Code::Internal,
            },
            Self::Ledger(e) => match e {
                LedgerError::Locked { .. } => Code::Unavailable,
                LedgerError::ConsentExists { .. } | LedgerError::MessageIdConflict { .. } => {
                    Code::AlreadyExists
                }
                LedgerError::UnknownConsent { .. } | LedgerError::UnknownMessage { .. } => {
                    Code::NotFound
                }
                LedgerError::AlreadyWithdrawn { .. } | LedgerError::AlreadySuperseded { .. } => {
                    Code::FailedPrecondition
                }
                LedgerError::Store(_)
                | LedgerError::Io { .. }
                | LedgerError::Task { .. }
                | LedgerError::Corrupt { .. }
                | LedgerError::AuditBroken { .. }
                | LedgerError::NoDataKey
                | LedgerError::BadDataKey { .. }
                | LedgerError::NewerStore { .. } => Code::Internal,
            },
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let code = e.code();
        let message = match code {
            // Internal details go to the node's log, not to the caller.
            Code::Internal | Code::Unavailable => {
                tracing::error!(error = %e, "internal error");
                "internal error in the node; see its log".to_string()
            }
            _ => e.to_string(),
        };
        let mut status = Status::new(code, message);
        if let Ok(v) = e.reason_code().parse() {
            status.metadata_mut().insert(REASON_METADATA, v);
        }
        status
    }
}

/// The reason code a status carries, if any.
pub fn reason_of(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(REASON_METADATA)
        .and_then(|v| v.to_str().ok())
}
