//! What the directory pins for an agency besides its entry: its Ed25519 keys with their
//! states, and its revoked TLS certificates.

use kurzdraht_envelope::VerifyingKey;
use time::Date;

/// What a pinned key may still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new envelopes and receipts.
    Active,
    /// Verifies stored evidence, and envelopes created before `since` (German midnight).
    Retired { since: Date },
    /// Verifies nothing.
    Revoked { since: Date },
}

impl KeyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired { .. } => "retired",
            Self::Revoked { .. } => "revoked",
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::Retired { since } => write!(f, "retired since {since}"),
            Self::Revoked { since } => write!(f, "revoked on {since}"),
        }
    }
}

/// The most revoked TLS certificates one agency's entry may list. A certificate is valid for
/// at most 13 months, so an entry can be dropped once the certificate it names has expired.
pub const MAX_REVOKED_CERTIFICATES: usize = 32;

/// A TLS certificate of an agency that no node accepts any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// SHA-256 of the certificate's DER form.
    pub sha256: [u8; 32],
    /// The day it was revoked (for people; the revocation holds from the moment the
    /// directory listing it is in force).
    pub since: Date,
}

/// The fingerprint of a certificate as the directory names it: SHA-256 of its DER form, hex.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// A key pinned for an agency, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    pub key: VerifyingKey,
    pub state: KeyState,
}
