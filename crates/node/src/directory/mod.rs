//! The directory: every agency of the federation with its role, peer endpoint, area of
//! competence and pinned Ed25519 keys, each key with its state. One TOML file
//! (`directory.toml`), versioned, and signed by the federation operator in a file beside it
//! (`directory.toml.sig`); the node trusts nothing about a peer that the directory does not
//! say, and reads no directory whose signature does not verify against the operator key
//! pinned in its `node.toml` (verify first, decode second).
//!
//! ```toml
//! version = 2                         # raised with every change; a node refuses an older one
//!
//! [[agency]]
//! id = "jugendamt-norderstedt"
//! name = "Jugendamt der Stadt Norderstedt"
//! role = "jugendamt"
//! endpoint = "https://jugendamt-norderstedt.kurzdraht.example:7443"
//! competence = ["plz:22844", "plz:22846", "plz:22848", "plz:22850", "plz:22851"]
//! signing_keys = [
//!   { key = "<64 hex digits>", state = "retired", since = "2026-11-01" },
//!   { key = "<64 hex digits>", state = "active" },
//! ]
//! # optional: TLS certificates of this agency no node accepts any more
//! revoked_certificates = [
//!   { sha256 = "<64 hex digits: SHA-256 of the DER certificate>", since = "2026-11-29" },
//! ]
//! ```
//!
//! Key states: `active` signs new envelopes and receipts; `retired` (since a German calendar
//! day) still verifies what it signed before — stored evidence always, an envelope only if it
//! was created before that day — and never a new envelope; `revoked` (on a day) verifies
//! nothing: its signatures are refused, whenever they claim to have been made.
//!
//! A revoked TLS certificate (`revoked_certificates`, by the SHA-256 of its DER form, as
//! `kurzdraht pki fingerprint` prints it; at most [`MAX_REVOKED_CERTIFICATES`] per agency) is
//! refused as that agency's client and server certificate from the moment the directory
//! listing it is in force, whatever its `since` (the day it was revoked, for the people
//! reading the directory); see `crate::tls`.

use crate::{clock, policy::Role, NodeError};
use kurzdraht_envelope::{
    agency::validate_agency_id, directory_fingerprint, verify_and_open, verify_header,
    EnvelopeError, Limits, OpenedEnvelope, VerifyingKey,
};
use kurzdraht_proto::v1::SignedEnvelope;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

mod keys;
mod signature;
pub use keys::{
    certificate_fingerprint, KeyState, PinnedKey, RevokedCertificate, MAX_REVOKED_CERTIFICATES,
};
use keys::{pinned_keys, revoked_certificates};
pub use signature::{
    check_signature, read_public_key, signature_file, signature_path, SignatureProblem,
};

/// Where an agency is competent: a postal code (`plz:22846`) or an official region key
/// (Amtlicher Regionalschlüssel, `ars:` and 2 to 12 digits; a shorter key covers every
/// region below it, e.g. `ars:01060` the Kreis Segeberg).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Competence {
    PostalCode(String),
    RegionKey(String),
}

impl Competence {
    fn parse(text: &str) -> Result<Self, String> {
        let digits = |s: &str, range: std::ops::RangeInclusive<usize>| {
            range.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        match text.split_once(':') {
            Some(("plz", code)) if digits(code, 5..=5) => Ok(Self::PostalCode(code.into())),
            Some(("ars", key)) if digits(key, 2..=12) => Ok(Self::RegionKey(key.into())),
            _ => Err(format!(
                "{text:?} is neither a postal code (plz: and 5 digits) nor a region key (ars: and 2 to 12 digits)"
            )),
        }
    }
}

impl std::fmt::Display for Competence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PostalCode(c) => write!(f, "plz:{c}"),
            Self::RegionKey(k) => write!(f, "ars:{k}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `https://host:port` of its PeerExchange.
    pub endpoint: String,
    /// Where it is competent (for a Jugendamt: the people living there are its cases).
    pub competence: Vec<Competence>,
    /// Every key pinned for it, in the order listed.
    pub keys: Vec<PinnedKey>,
    /// Its TLS certificates no node accepts any more.
    pub revoked_certificates: Vec<RevokedCertificate>,
    active: Vec<VerifyingKey>,
    evidence: Vec<VerifyingKey>,
}

impl Agency {
    /// The keys that sign new envelopes and receipts.
    pub fn active_keys(&self) -> &[VerifyingKey] {
        &self.active
    }

    /// The keys stored evidence verifies with: active and retired, never revoked.
    pub fn evidence_keys(&self) -> &[VerifyingKey] {
        &self.evidence
    }

    /// The revocation of the certificate `der` (DER form) if the directory lists it for this
    /// agency.
    pub fn revocation_of(&self, der: &[u8]) -> Option<&RevokedCertificate> {
        if self.revoked_certificates.is_empty() {
            return None;
        }
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(der).into();
        self.revoked_certificates
            .iter()
            .find(|r| r.sha256 == digest)
    }

    /// The state of `key` if it is pinned for this agency.
    pub fn state_of(&self, key: &VerifyingKey) -> Option<KeyState> {
        self.keys.iter().find(|k| k.key == *key).map(|k| k.state)
    }

    /// Opens an envelope this agency signed and sent now: verified with an active key, or
    /// with a retired key if the (signed) header says it was created before the key was
    /// retired; a revoked key's signature is refused, naming the day. All refusals are
    /// `bad-signature`.
    pub fn open_envelope(
        &self,
        envelope: &SignedEnvelope,
        limits: &Limits,
    ) -> Result<OpenedEnvelope, NodeError> {
        let first = match verify_and_open(envelope, &self.active, limits) {
            Err(EnvelopeError::BadSignature { .. }) => EnvelopeError::BadSignature {
                signer: self.id.clone(),
            },
            other => return other.map_err(NodeError::from),
        };
        for pinned in self.keys.iter().filter(|k| k.state != KeyState::Active) {
            let Ok(header) = verify_header(envelope, std::slice::from_ref(&pinned.key), limits)
            else {
                continue;
            };
            return match pinned.state {
                KeyState::Retired { since }
                    if header.created_at_ms < clock::german_start_of_day_ms(since) =>
                {
                    verify_and_open(envelope, std::slice::from_ref(&pinned.key), limits)
                        .map_err(NodeError::from)
                }
                state => Err(NodeError::KeyNotAccepted(format!(
                    "the envelope is signed with a key of {} that is {state} in the directory{}",
                    self.id,
                    if matches!(state, KeyState::Retired { .. }) {
                        "; new envelopes need an active key"
                    } else {
                        ""
                    }
                ))),
            };
        }
        Err(first.into())
    }

    /// Why a stored envelope of this agency proves nothing any more (its signature verifies
    /// with no active or retired key): a revoked key, or no key listed now.
    pub fn evidence_problem(&self, envelope: &SignedEnvelope, limits: &Limits) -> String {
        for pinned in &self.keys {
            if let KeyState::Revoked { since } = pinned.state {
                if verify_header(envelope, std::slice::from_ref(&pinned.key), limits).is_ok() {
                    return format!(
                        "signed with a key of {} revoked on {since}: it proves nothing",
                        self.id
                    );
                }
            }
        }
        format!(
            "the signature does not verify with any key the directory lists for {} (active or retired)",
            self.id
        )
    }
}

/// A loaded directory: its agencies, its version and the fingerprint of its file.
#[derive(Debug, Clone)]
pub struct Directory {
    version: u64,
    fingerprint: [u8; 32],
    agencies: BTreeMap<String, Agency>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    version: u64,
    agency: Vec<AgencyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyEntry {
    id: String,
    name: String,
    role: Role,
    endpoint: String,
    #[serde(default)]
    competence: Vec<String>,
    signing_keys: Vec<KeyEntry>,
    #[serde(default)]
    revoked_certificates: Vec<RevokedEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedEntry {
    sha256: String,
    since: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key: String,
    state: KeyStateName,
    #[serde(default)]
    since: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum KeyStateName {
    Active,
    Retired,
    Revoked,
}

impl Directory {
    /// Reads `path` and its signature file and verifies the signature with `operator`
    /// before anything of the file is decoded.
    pub fn load_signed(path: &Path, operator: &VerifyingKey) -> Result<Self, NodeError> {
        let bytes = std::fs::read(path).map_err(|e| {
            NodeError::config(
                "directory.file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let sig_path = signature_path(path);
        let sig = std::fs::read_to_string(&sig_path).map_err(|e| {
            NodeError::config(
                "directory.file",
                format!("cannot read its signature {}: {e}", sig_path.display()),
            )
        })?;
        Self::verified(&bytes, &sig, operator).map_err(|e| match e {
            NodeError::Config { key, reason } if key == "directory.signature" => {
                NodeError::config(key, format!("{}: {reason}", sig_path.display()))
            }
            e => e,
        })
    }

    /// A directory from its bytes and signature text, verified with `operator` first.
    pub fn verified(
        bytes: &[u8],
        signature_text: &str,
        operator: &VerifyingKey,
    ) -> Result<Self, NodeError> {
        check_signature(bytes, signature_text, operator)
            .map_err(|p| NodeError::config("directory.signature", p.to_string()))?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| NodeError::config("directory", "is not UTF-8"))?;
        Self::from_toml(text)
    }

    /// Parses and validates a directory's text; no signature is checked (the operator's
    /// `directory sign` and tests use it; a node uses [`Directory::load_signed`]).
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        let file: DirectoryFile = toml::from_str(text)
            .map_err(|e| NodeError::config("directory", e.message().to_string()))?;
        if file.version == 0 {
            return Err(NodeError::config(
                "directory.version",
                "must be 1 or more (raise it with every change)",
            ));
        }
        let mut agencies = BTreeMap::new();
        for (i, entry) in file.agency.into_iter().enumerate() {
            let key = |k: &str| format!("directory.agency[{i}].{k}");
            validate_agency_id("agency id", &entry.id)
                .map_err(|e| NodeError::config(key("id"), e.to_string()))?;
            if !(entry.endpoint.starts_with("https://")) {
                return Err(NodeError::config(
                    key("endpoint"),
                    "must be an https:// URL",
                ));
            }
            let keys = pinned_keys(&entry, &key)?;
            let revoked_certificates = revoked_certificates(&entry, &key)?;
            let competence = competence(&entry, &key)?;
            let active = keys
                .iter()
                .filter(|k| k.state == KeyState::Active)
                .map(|k| k.key)
                .collect();
            let evidence = keys
                .iter()
                .filter(|k| !matches!(k.state, KeyState::Revoked { .. }))
                .map(|k| k.key)
                .collect();
            let agency = Agency {
                id: entry.id.clone(),
                name: entry.name,
                role: entry.role,
                endpoint: entry.endpoint,
                competence,
                keys,
                revoked_certificates,
                active,
                evidence,
            };
            if agencies.insert(entry.id.clone(), agency).is_some() {
                return Err(NodeError::config(
                    key("id"),
                    format!("{} is listed twice", entry.id),
                ));
            }
        }
        // A place is the case of one agency of a role: no two claim the same entry.
        let mut claimed: BTreeMap<(Role, &Competence), &str> = BTreeMap::new();
        for a in agencies.values() {
            for c in &a.competence {
                if let Some(other) = claimed.insert((a.role, c), &a.id) {
                    return Err(NodeError::config(
                        "directory.agency.competence",
                        format!("{c} is claimed by both {other} and {}", a.id),
                    ));
                }
            }
        }
        Ok(Self {
            version: file.version,
            fingerprint: directory_fingerprint(text.as_bytes()),
            agencies,
        })
    }

    /// The version the operator gave this directory.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// SHA-256 of the directory file, hex: the same on every node that runs this version.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.fingerprint)
    }

    pub fn get(&self, id: &str) -> Option<&Agency> {
        self.agencies.get(id)
    }

    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    /// The agency or an INVALID_ARGUMENT naming `field`.
    pub fn require(&self, field: &str, id: &str) -> Result<&Agency, NodeError> {
        self.get(id).ok_or_else(|| {
            NodeError::invalid(field, format!("{id:?} is not an agency in the directory"))
        })
    }

    /// The agency of `role` competent for a person living at `postal_code` or in the region
    /// of `region_key` (either may be empty): an exact postal code first, then the longest
    /// region key that covers `region_key`.
    pub fn competent(&self, role: Role, postal_code: &str, region_key: &str) -> Option<&Agency> {
        let of_role = || self.agencies().filter(move |a| a.role == role);
        if !postal_code.is_empty() {
            let wanted = Competence::PostalCode(postal_code.to_string());
            if let Some(a) = of_role().find(|a| a.competence.contains(&wanted)) {
                return Some(a);
            }
        }
        if region_key.is_empty() {
            return None;
        }
        of_role()
            .flat_map(|a| {
                a.competence.iter().filter_map(move |c| match c {
                    Competence::RegionKey(k) if region_key.starts_with(k.as_str()) => {
                        Some((k.len(), a))
                    }
                    _ => None,
                })
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, a)| a)
    }

    /// Why a running node cannot take `newer` without a restart, if it cannot: it adds or
    /// removes an agency, or changes a role (a node starts its delivery workers per peer and
    /// knows its own role from the start).
    pub fn restart_needed_for(&self, newer: &Directory) -> Option<String> {
        let added: Vec<&str> = newer
            .agencies
            .keys()
            .filter(|id| !self.agencies.contains_key(*id))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = self
            .agencies
            .keys()
            .filter(|id| !newer.agencies.contains_key(*id))
            .map(String::as_str)
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            return Some(format!(
                "it adds [{}] and removes [{}] agencies",
                added.join(", "),
                removed.join(", ")
            ));
        }
        self.agencies
            .values()
            .find(|a| newer.get(&a.id).is_some_and(|n| n.role != a.role))
            .map(|a| format!("it changes the role of {}", a.id))
    }
}

/// An agency entry's `competence`: each place once.
fn competence(
    entry: &AgencyEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<Competence>, NodeError> {
    let mut competence = Vec::new();
    for (j, c) in entry.competence.iter().enumerate() {
        let c = Competence::parse(c)
            .map_err(|e| NodeError::config(key(&format!("competence[{j}]")), e))?;
        if competence.contains(&c) {
            return Err(NodeError::config(
                key(&format!("competence[{j}]")),
                format!("{c} is listed twice"),
            ));
        }
        competence.push(c);
    }
    Ok(competence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurzdraht_envelope::{seal, sign_directory, SigningKey};
    use kurzdraht_proto::v1::{message_body::Body, EnvelopeHeader, MessageBody, MessageKind};

    fn entry(id: &str, role: &str, keys: &str, competence: &str) -> String {
        format!(
            "[[agency]]\nid = \"{id}\"\nname = \"{id}\"\nrole = \"{role}\"\nendpoint = \"https://{id}:7443\"\n\
             competence = [{competence}]\nsigning_keys = [{keys}]\n"
        )
    }

    fn key_entry(key: &SigningKey, state: &str) -> String {
        let since = match state {
            "active" => String::new(),
            _ => ", since = \"2026-11-01\"".into(),
        };
        format!(
            "{{ key = \"{}\", state = \"{state}\"{since} }}",
            key.verifying_key().to_hex()
        )
    }

    fn envelope(key: &SigningKey, created_at_ms: i64) -> SignedEnvelope {
        let header = EnvelopeHeader {
            message_id: kurzdraht_envelope::ids::new_id(),
            kind: MessageKind::CertificationRequest as i32,
            sender: "jobcenter-segeberg".into(),
            recipient: "jugendamt-kreis-segeberg".into(),
            created_at_ms,
            ..Default::default()
        };
        let body = MessageBody {
            body: Some(Body::CertificationRequest(Default::default())),
        };
        let mut e = seal(header, &body, key);
        e.signer = "jobcenter-segeberg".into();
        e
    }

    const LIMITS: Limits = Limits {
        max_header_bytes: 4096,
        max_payload_bytes: 65536,
    };

    #[test]
    fn each_key_state_decides_what_its_signatures_prove() {
        let (active, retired, revoked) = (
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
        );
        let text = format!(
            "version = 3\n{}",
            entry(
                "jobcenter-segeberg",
                "jobcenter",
                &[
                    key_entry(&retired, "retired"),
                    key_entry(&active, "active"),
                    key_entry(&revoked, "revoked"),
                ]
                .join(", "),
                ""
            )
        );
        let d = Directory::from_toml(&text).expect("valid");
        assert_eq!(d.version(), 3);
        let jc = d.get("jobcenter-segeberg").expect("listed");
        assert_eq!(jc.active_keys(), &[active.verifying_key()]);
        assert_eq!(
            jc.evidence_keys(),
            &[retired.verifying_key(), active.verifying_key()]
        );
        let midnight =
            clock::german_start_of_day_ms(clock::parse_date("d", "2026-11-01").expect("date"));
        // active: any time
        assert!(jc
            .open_envelope(&envelope(&active, midnight + 5), &LIMITS)
            .is_ok());
        // retired: only what it signed before the day it was retired
        assert!(jc
            .open_envelope(&envelope(&retired, midnight - 1), &LIMITS)
            .is_ok());
        let e = jc
            .open_envelope(&envelope(&retired, midnight), &LIMITS)
            .expect_err("a new envelope with a retired key");
        assert_eq!(e.reason_code(), "bad-signature");
        assert!(e.to_string().contains("retired since 2026-11-01"), "{e}");
        // revoked: never, whatever the envelope claims
        let e = jc
            .open_envelope(&envelope(&revoked, midnight - 86_400_000), &LIMITS)
            .expect_err("a revoked key");
        assert_eq!(e.reason_code(), "bad-signature");
        assert!(e.to_string().contains("revoked on 2026-11-01"), "{e}");
        assert!(jc
            .evidence_problem(&envelope(&revoked, 0), &LIMITS)
            .contains("revoked on 2026-11-01"));
        // a key not listed at all: the plain bad signature
        let stranger = SigningKey::generate().expect("key");
        let e = jc
            .open_envelope(&envelope(&stranger, midnight), &LIMITS)
            .expect_err("unlisted");
        assert!(matches!(
            e,
            NodeError::Envelope(EnvelopeError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_malformed_entry_is_refused_naming_its_field() {
        let k = SigningKey::generate().expect("key");
        let active = key_entry(&k, "active");
        for (text, field) in [
            (
                format!("version = 0\n{}", entry("a-b", "jobcenter", &active, "")),
                "directory.version",
            ),
            (
                format!(
                    "version = 1\n{}",
                    entry(
                        "a-b",
                        "jobcenter",
                        &format!(
                            "{{ key = \"{}\", state = \"retired\" }}",
                            k.verifying_key().to_hex()
                        ),
                        ""
                    )
                ),
                "directory.agency[0].signing_keys[0].since",
            ),
            (
                format!(
                    "version = 1\n{}",
                    entry("a-b", "jobcenter", &format!("{active}, {active}"), "")
                ),
                "directory.agency[0].signing_keys[1].key",
            ),
            (
                format!(
                    "version = 1\n{}",
                    entry("a-b", "jugendamt", &active, "\"22846\"")
                ),
                "directory.agency[0].competence[0]",
            ),
            (
                format!(
                    "version = 1\n{}{}",
                    entry("a-b", "jugendamt", &active, "\"plz:22846\""),
                    entry(
                        "c-d",
                        "jugendamt",
                        &key_entry(&SigningKey::generate().expect("key"), "active"),
                        "\"plz:22846\""
                    )
                ),
                "directory.agency.competence",
            ),
        ] {
            match Directory::from_toml(&text) {
                Err(NodeError::Config { key, reason }) => assert_eq!(key, field, "{reason}"),
                other => panic!("expected a refusal naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn revoked_certificates_are_bounded_and_named_by_their_field() {
        let k = key_entry(&SigningKey::generate().expect("key"), "active");
        let with = |list: &str| {
            format!(
                "version = 1\n{}revoked_certificates = [{list}]\n",
                entry("a-b", "jobcenter", &k, "")
            )
        };
        let revoked = |i: usize| format!("{{ sha256 = \"{i:064x}\", since = \"2026-11-29\" }}");
        let full: Vec<String> = (0..MAX_REVOKED_CERTIFICATES).map(revoked).collect();
        let d = Directory::from_toml(&with(&full.join(", "))).expect("at the limit");
        let a = d.get("a-b").expect("listed");
        assert_eq!(a.revoked_certificates.len(), MAX_REVOKED_CERTIFICATES);
        assert_eq!(a.revoked_certificates[1].sha256[31], 1);
        let over: Vec<String> = (0..=MAX_REVOKED_CERTIFICATES).map(revoked).collect();
        for (list, field, why) in [
            (
                over.join(", "),
                "directory.agency[0].revoked_certificates",
                "over the limit of 32",
            ),
            (
                "{ sha256 = \"abc\", since = \"2026-11-29\" }".into(),
                "directory.agency[0].revoked_certificates[0].sha256",
                "64 hex digits",
            ),
            (
                format!(
                    "{{ sha256 = \"{}\", since = \"2026-11-29\" }}",
                    "g".repeat(64)
                ),
                "directory.agency[0].revoked_certificates[0].sha256",
                "64 hex digits",
            ),
            (
                format!("{{ sha256 = \"{:064x}\", since = \"29.11.2026\" }}", 7),
                "directory.agency[0].revoked_certificates[0].since",
                "YYYY-MM-DD",
            ),
            (
                format!("{}, {}", revoked(3), revoked(3)),
                "directory.agency[0].revoked_certificates[1].sha256",
                "listed twice",
            ),
        ] {
            match Directory::from_toml(&with(&list)) {
                Err(NodeError::Config { key, reason }) => {
                    assert_eq!(key, field, "{reason}");
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("expected a refusal naming {field}, got {other:?}"),
            }
        }
        // A revocation names the certificate by the SHA-256 of its DER form.
        let der = b"some DER bytes";
        let text = with(&format!(
            "{{ sha256 = \"{}\", since = \"2026-11-29\" }}",
            certificate_fingerprint(der).to_uppercase()
        ));
        let d = Directory::from_toml(&text).expect("upper-case hex is read");
        let a = d.get("a-b").expect("listed");
        assert!(a.revocation_of(der).is_some());
        assert!(a.revocation_of(b"another certificate").is_none());
    }

    #[test]
    fn competence_finds_the_postal_code_then_the_longest_region_key() {
        let key = |_: ()| key_entry(&SigningKey::generate().expect("key"), "active");
        let text = format!(
            "version = 1\n{}{}{}",
            entry("jc", "jobcenter", &key(()), "\"ars:01060\""),
            entry("kreis", "jugendamt", &key(()), "\"ars:01060\""),
            entry(
                "norderstedt",
                "jugendamt",
                &key(()),
                "\"plz:22846\", \"ars:010600063063\""
            ),
        );
        let d = Directory::from_toml(&text).expect("valid");
        let who =
            |plz: &str, ars: &str| d.competent(Role::Jugendamt, plz, ars).map(|a| a.id.clone());
        assert_eq!(who("22846", "").as_deref(), Some("norderstedt"));
        assert_eq!(who("", "010600063063").as_deref(), Some("norderstedt"));
        assert_eq!(who("23795", "010600005005").as_deref(), Some("kreis"));
        assert_eq!(who("20095", "020000000000"), None);
        assert_eq!(
            d.competent(Role::Jobcenter, "", "010600063063")
                .map(|a| a.id.as_str()),
            Some("jc")
        );
    }

    #[test]
    fn only_the_pinned_operator_signature_over_the_exact_bytes_verifies() {
        let operator = SigningKey::generate().expect("key");
        let text = format!(
            "version = 1\n{}",
            entry(
                "a-b",
                "jobcenter",
                &key_entry(&SigningKey::generate().expect("key"), "active"),
                ""
            )
        );
        let sig = signature_file(
            &sign_directory(text.as_bytes(), &operator),
            &operator.verifying_key(),
        );
        let d =
            Directory::verified(text.as_bytes(), &sig, &operator.verifying_key()).expect("signed");
        assert_eq!(
            d.fingerprint(),
            hex::encode(directory_fingerprint(text.as_bytes()))
        );
        let changed = text.replace("version = 1", "version = 9");
        assert_eq!(
            check_signature(changed.as_bytes(), &sig, &operator.verifying_key()),
            Err(SignatureProblem::DoesNotVerify)
        );
        let other = SigningKey::generate().expect("key");
        assert!(matches!(
            check_signature(text.as_bytes(), &sig, &other.verifying_key()),
            Err(SignatureProblem::OtherOperator { .. })
        ));
        match Directory::verified(changed.as_bytes(), &sig, &operator.verifying_key()) {
            Err(NodeError::Config { key, .. }) => assert_eq!(key, "directory.signature"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
