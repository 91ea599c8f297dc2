//! The node's one error type, and the one place where errors become gRPC statuses.
//!
//! Every status carries the `kurzdraht-reason` metadata with a stable reason code, so IT
//! systems can act on a refusal without parsing text. Messages name fields and reasons,
//! never personal data or secrets.

use kurzdraht_envelope::EnvelopeError;
use kurzdraht_ledger::{ConsentRefusal, LedgerError};
use tonic::{Code, Status};

// A received status is read, and classified into retry or final, in one place: the client
// crate's `status` module (the CLI and IT systems read it alike).
pub use kurzdraht_client::status::{reason_of, retry_class, Retry, REASON_METADATA};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A peer's TLS certificate the directory in force lists as revoked for its agency.
    /// Transient for the sender: the same envelope passes once its agency presents a renewed
    /// certificate.
    #[error("certificate revoked: {0}")]
    CertificateRevoked(String),
    /// A signature that verifies, but with a pinned key the directory no longer accepts for
    /// it (retired before the envelope was made, or revoked): refused as a bad signature.
    #[error("bad signature: {0}")]
    KeyNotAccepted(String),
    #[error("{0}")]
    Consent(ConsentRefusal),
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The U25 rule: the person is 25 or older on the message date. The field is valid;
    /// the flow does not apply to this person.
    #[error("over the age limit: {field}: {reason}")]
    OverAge { field: String, reason: String },
    /// A consent recorded at another agency: only that agency withdraws or replaces it.
    #[error("{0}")]
    NotRecordingAgency(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A console account locked after repeated failed logins: refused, whatever the
    /// password, until then (seconds since 1970, the node's clock). Worth trying later.
    #[error("account locked after repeated failed logins until {}", crate::clock::format_ms(until_secs.saturating_mul(1000)))]
    AccountLocked { until_secs: i64 },
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Over a size limit: final, never worth a retry with the same content.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Bytes that are no valid message of the contract (no protobuf, invalid UTF-8 in a
    /// string, a broken gRPC frame): the client's fault, final.
    #[error("malformed: {0}")]
    Malformed(String),
    /// An envelope from the future beyond the allowed clock skew: the sender's clock is
    /// ahead; the same envelope is accepted once the clocks agree, so the sender retries.
    #[error("clock skew: {0}")]
    ClockSkew(String),
    /// Not done this time, nothing changed; the caller should try again.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A status watcher fell too far behind; its stream ends.
    #[error("aborted: {0}")]
    Lagged(String),
    /// Queueing could not be made durable and was undone: nothing was queued.
    #[error("not stored: {0}")]
    NotStored(String),
    /// The store failed and even undoing failed: the outcome is unknown.
    #[error("store failed: {0}")]
    StoreFailed(String),
    /// A broken invariant inside the node (a bug), never the caller's fault.
    #[error("internal: {0}")]
    Internal(String),
    /// A task of the node that panicked or was cancelled (a join error), or whose work
    /// could not be run: a bug or the host, never the caller's fault.
    #[error("task failed: {0}")]
    Task(String),
    #[error("configuration: {key}: {reason}")]
    Config { key: String, reason: String },
    /// A listen address could not be bound (in use by another process, or not permitted).
    #[error("{key}: cannot listen on {addr}: {source}")]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The node's TLS set-up could not be built (its certificates or verifier).
    #[error("TLS: {0}")]
    Tls(String),
    /// Key or certificate material could not be made (setting up a federation).
    #[error("certificate material: {0}")]
    Certificate(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<kurzdraht_client::ClientError> for NodeError {
    fn from(e: kurzdraht_client::ClientError) -> Self {
        match e {
            kurzdraht_client::ClientError::Config { key, reason } => Self::Config { key, reason },
            kurzdraht_client::ClientError::Transport(e) => Self::Transport(e),
        }
    }
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
            Self::CertificateRevoked(_) => "certificate-revoked",
            Self::KeyNotAccepted(_) => "bad-signature",
            Self::Consent(r) => r.code(),
            Self::Invalid { .. } => "invalid-argument",
            Self::OverAge { .. } => "over-age",
            Self::NotRecordingAgency(_) => "not-recording-agency",
            Self::NotFound(_) => "not-found",
            Self::AccountLocked { .. } => "account-locked",
            Self::ResourceExhausted(_) => "rate-limited",
            Self::TooLarge(_) => "too-large",
            Self::Malformed(_) => "malformed",
            Self::ClockSkew(_) => "clock-skew",
            Self::Aborted(_) => "retry",
            Self::Lagged(_) => "watch-lagged",
            Self::NotStored(_) => "not-stored",
            Self::StoreFailed(_) => "store-failed",
            Self::Internal(_) | Self::Task(_) => "internal",
            Self::Config { .. } => "config",
            Self::Listen { .. } => "listen",
            Self::Tls(_) | Self::Certificate(_) => "tls",
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
                LedgerError::UnknownConsent { .. } => "not-found",
                LedgerError::AlreadyWithdrawn { .. } => "consent-withdrawn",
                LedgerError::AlreadySuperseded { .. } => "consent-superseded",
                LedgerError::MessageIdConflict { .. } => "message-id-conflict",
                LedgerError::IdempotencyKeyReused { .. } => "idempotency-key-reused",
                LedgerError::UnknownMessage { .. } => "not-found",
                LedgerError::AccountExists { .. } => "account-exists",
                LedgerError::UnknownAccount { .. } => "not-found",
                LedgerError::Refused(r) => r.code(),
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
            Self::Unauthenticated(_) | Self::KeyNotAccepted(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) | Self::CertificateRevoked(_) => Code::PermissionDenied,
            Self::Consent(_) | Self::NotRecordingAgency(_) => Code::FailedPrecondition,
            Self::Invalid { .. } | Self::OverAge { .. } | Self::Malformed(_) => {
                Code::InvalidArgument
            }
            Self::NotFound(_) => Code::NotFound,
            Self::ResourceExhausted(_) | Self::TooLarge(_) | Self::AccountLocked { .. } => {
                Code::ResourceExhausted
            }
            Self::ClockSkew(_) => Code::Unavailable,
            Self::Aborted(_) | Self::Lagged(_) => Code::Aborted,
            Self::NotStored(_) | Self::StoreFailed(_) => Code::Unavailable,
            Self::Config { .. }
            | Self::Listen { .. }
            | Self::Tls(_)
            | Self::Certificate(_)
            | Self::Io(_)
            | Self::Transport(_)
            | Self::Internal(_)
            | Self::Task(_) => Code::Internal,
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
                LedgerError::ConsentExists { .. }
                | LedgerError::MessageIdConflict { .. }
                | LedgerError::AccountExists { .. } => Code::AlreadyExists,
                LedgerError::UnknownConsent { .. }
                | LedgerError::UnknownMessage { .. }
                | LedgerError::UnknownAccount { .. } => Code::NotFound,
                LedgerError::AlreadyWithdrawn { .. }
                | LedgerError::AlreadySuperseded { .. }
                | LedgerError::Refused(_)
                | LedgerError::IdempotencyKeyReused { .. } => Code::FailedPrecondition,
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
            Code::Internal => {
                tracing::error!(error = %e, "internal error");
                "internal error in the node; see its log".to_string()
            }
            Code::Unavailable if matches!(e, NodeError::Ledger(_)) => {
                tracing::error!(error = %e, "node unavailable");
                "the node cannot serve this now; see its log".to_string()
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

/// tonic's own answers to a request it refused before the node saw it, as the contract
/// says: a message over the port's decoding limit (tonic: OUT_OF_RANGE) is `too-large`,
/// bytes that do not decode or a broken gRPC frame (tonic: INTERNAL with one of the messages
/// of its decoder) are `malformed`. `None` for every other status, above all the node's own
/// (they carry a reason; a real INTERNAL of the node stays INTERNAL).
pub fn transport_refusal(code: Code, message: &str, has_reason: bool) -> Option<NodeError> {
    /// How tonic 0.14 and prost word a request they could not decode.
    const UNDECODABLE: [&str; 4] = [
        "failed to decode Protobuf message",
        "protocol error: received message with",
        "Unexpected EOF decoding stream",
        "Missing request message",
    ];
    if has_reason {
        return None;
    }
    match code {
        // The node never answers OUT_OF_RANGE: every one is the transport's size check.
        Code::OutOfRange => Some(NodeError::TooLarge(format!(
            "the request exceeds this port's limit ({message})"
        ))),
        Code::Internal if UNDECODABLE.iter().any(|p| message.starts_with(p)) => Some(
            NodeError::Malformed(format!("the request does not decode: {message}")),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal is classified as its meaning says, through the status it really
    /// becomes (so the classification and the mapping cannot drift apart).
    #[test]
    fn every_refusal_the_node_makes_is_classified_by_its_meaning() {
        let cases: [(fn() -> NodeError, Retry); 11] = [
            (
                || NodeError::AccountLocked { until_secs: 1 },
                Retry::Transient,
            ),
            (
                || NodeError::ResourceExhausted("over the rate".into()),
                Retry::Transient,
            ),
            (|| NodeError::ClockSkew("ahead".into()), Retry::Transient),
            (|| NodeError::Aborted("store".into()), Retry::Transient),
            (|| NodeError::TooLarge("payload".into()), Retry::Final),
            (
                || {
                    NodeError::Envelope(EnvelopeError::TooLarge {
                        field: "payload",
                        size: 2,
                        limit: 1,
                    })
                },
                Retry::Final,
            ),
            (|| NodeError::invalid("f", "bad"), Retry::Final),
            (|| NodeError::PermissionDenied("no".into()), Retry::Final),
            (
                || NodeError::Consent(ConsentRefusal::Withdrawn),
                Retry::Final,
            ),
            (|| NodeError::Unauthenticated("no".into()), Retry::Final),
            (
                || {
                    NodeError::Ledger(LedgerError::IdempotencyKeyReused {
                        method: "Submit".into(),
                        answered_at_ms: 1,
                    })
                },
                Retry::Final,
            ),
        ];
        for (make, want) in cases {
            let what = make().to_string();
            let status = Status::from(make());
            assert_eq!(
                retry_class(status.code(), reason_of(&status)),
                want,
                "{what}"
            );
        }
        // Without a reason (an older peer, the transport), the code decides.
        assert_eq!(retry_class(Code::ResourceExhausted, None), Retry::Transient);
        assert_eq!(retry_class(Code::OutOfRange, None), Retry::Final);
        assert_eq!(retry_class(Code::Unavailable, None), Retry::Transient);
        assert_eq!(retry_class(Code::DeadlineExceeded, None), Retry::Transient);
        assert_eq!(retry_class(Code::Internal, None), Retry::Transient);
        assert_eq!(retry_class(Code::FailedPrecondition, None), Retry::Final);
    }
}
