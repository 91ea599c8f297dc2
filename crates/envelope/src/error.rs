//! The one error type of this crate: every way an envelope, receipt, id or key can be wrong.

use kurzdraht_proto::v1::MessageKind;

/// Why an envelope, receipt, id or key was refused. Messages name the field and never carry
/// personal data or key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("{field} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("signature does not verify against the pinned key(s) of {signer}")]
    BadSignature { signer: String },
    #[error("{field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("header.payload_sha256 does not match the payload")]
    PayloadHashMismatch,
    #[error("envelope signed by {signer} but header.sender is {sender}")]
    SenderMismatch { signer: String, sender: String },
    #[error("header.kind is {header:?} but the payload carries {body:?}")]
    KindMismatch {
        header: MessageKind,
        body: MessageKind,
    },
    #[error("receipt does not match: {field} differs from the delivered envelope")]
    ReceiptMismatch { field: &'static str },
}

impl EnvelopeError {
    pub(crate) fn malformed(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            field,
            reason: reason.into(),
        }
    }
}
