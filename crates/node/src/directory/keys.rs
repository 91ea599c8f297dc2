//! What the directory pins for an agency besides its entry: its Ed25519 keys with their
//! states, and its revoked TLS certificates; and how an entry's lists of them are read.

use super::{AgencyEntry, KeyStateName};
use crate::{clock, NodeError};
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

/// An agency entry's `signing_keys`: at least one, each once, a date exactly for a retired
/// or revoked key. `key` names a field of the entry.
pub(super) fn pinned_keys(
    entry: &AgencyEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<PinnedKey>, NodeError> {
    if entry.signing_keys.is_empty() {
        return Err(NodeError::config(key("signing_keys"), "lists no key"));
    }
    let mut keys: Vec<PinnedKey> = Vec::new();
    for (j, k) in entry.signing_keys.iter().enumerate() {
        let field = |f: &str| key(&format!("signing_keys[{j}].{f}"));
        let public = VerifyingKey::from_hex(&k.key)
            .map_err(|e| NodeError::config(field("key"), e.to_string()))?;
        let since = match &k.since {
            Some(d) => Some(
                clock::parse_date(&field("since"), d)
                    .map_err(|e| NodeError::config(field("since"), e.to_string()))?,
            ),
            None => None,
        };
        let state =
            match (k.state, since) {
                (KeyStateName::Active, None) => KeyState::Active,
                (KeyStateName::Active, Some(_)) => {
                    return Err(NodeError::config(
                        field("since"),
                        "only a retired or revoked key carries a date",
                    ))
                }
                (KeyStateName::Retired, Some(since)) => KeyState::Retired { since },
                (KeyStateName::Revoked, Some(since)) => KeyState::Revoked { since },
                (_, None) => return Err(NodeError::config(
                    field("since"),
                    "a retired or revoked key needs the day it was retired or revoked (YYYY-MM-DD)",
                )),
            };
        if keys.iter().any(|p| p.key == public) {
            return Err(NodeError::config(field("key"), "is listed twice"));
        }
        keys.push(PinnedKey { key: public, state });
    }
    Ok(keys)
}

/// An agency entry's `revoked_certificates`: at most [`MAX_REVOKED_CERTIFICATES`], each
/// once, by its SHA-256.
pub(super) fn revoked_certificates(
    entry: &AgencyEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<RevokedCertificate>, NodeError> {
    if entry.revoked_certificates.len() > MAX_REVOKED_CERTIFICATES {
        return Err(NodeError::config(
            key("revoked_certificates"),
            format!(
                "lists {} certificates, over the limit of {MAX_REVOKED_CERTIFICATES}: drop the entries of certificates that have expired",
                entry.revoked_certificates.len()
            ),
        ));
    }
    let mut revoked_certificates: Vec<RevokedCertificate> = Vec::new();
    for (j, r) in entry.revoked_certificates.iter().enumerate() {
        let field = |f: &str| key(&format!("revoked_certificates[{j}].{f}"));
        let mut sha256 = [0u8; 32];
        if r.sha256.len() != 64
            || hex::decode_to_slice(r.sha256.to_ascii_lowercase(), &mut sha256).is_err()
        {
            return Err(NodeError::config(
                field("sha256"),
                "must be 64 hex digits: the SHA-256 of the DER certificate (kurzdraht pki fingerprint --cert FILE)",
            ));
        }
        let since = clock::parse_date(&field("since"), &r.since)
            .map_err(|e| NodeError::config(field("since"), e.to_string()))?;
        if revoked_certificates.iter().any(|p| p.sha256 == sha256) {
            return Err(NodeError::config(field("sha256"), "is listed twice"));
        }
        revoked_certificates.push(RevokedCertificate { sha256, since });
    }
    Ok(revoked_certificates)
}
