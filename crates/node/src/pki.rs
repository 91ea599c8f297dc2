//! Keys, certificates and the signed directory of a federation: made where they are used.
//!
//! **The ceremony between separate authorities** (`deploy/README.md`, §1), each step on its
//! own host, only public files moving between them:
//!
//! | who, where | command | secrets it makes (stay there) | public files it hands on |
//! |---|---|---|---|
//! | federation CA (offline machine) | `pki ca-init` | `ca.key` | `ca.pem` → every node host |
//! | federation operator | `pki operator-key` | `operator.key` | `operator.pub` → every node host |
//! | each agency's node host | `pki agency-keys` ([`agency_keys`]) | `tls.key`, `signing-YYYY-MM.key`, `data.key`, `api-token` | `tls.csr` → CA; `<agency>.entry.toml` → operator |
//! | federation CA | `pki sign-request` ([`sign_request`]) | – | `tls.pem` → that agency |
//! | federation operator | `directory assemble`, `directory sign` | – | `directory.toml` + `.sig` → every node host |
//!
//! **`pki init`** ([`init`]) makes all of it on one machine — every agency's secrets in one
//! place — as a shortcut for the demo and the tests only:
//!
//! ```text
//! DIR/ca.pem  ca.key                 federation CA
//! DIR/operator.pub  operator.key     federation operator (signs the directory)
//! DIR/directory.toml  .sig           agencies, roles, endpoints, competence, pinned keys
//! DIR/<agency>/node.toml             the node's configuration
//! DIR/<agency>/tls.pem tls.key       the agency's certificate (server and client) and key
//! DIR/<agency>/signing.key           Ed25519 seed (hex)
//! DIR/<agency>/data.key              ChaCha20-Poly1305 key sealing personal data in the store
//! DIR/<agency>/api-token             the IT system's bearer token (node.toml holds its hash)
//! DIR/<agency>/client.toml           how the IT system reaches the node
//! ```
//! Secret files are written with mode 0600, and no file is ever overwritten.
//!
//! Certificates: the CA's is valid 10 years ([`CA_VALIDITY_DAYS`]), an agency's one year by
//! default and at most 13 months ([`CERTIFICATE_VALIDITY_DAYS`], [`MAX_CERTIFICATE_DAYS`]).
//! Renewal is a new request from the agency's host (`pki tls-request`, with a new key or
//! `--reuse-key` the one in use) signed again by the CA (`pki sign-request`).

use crate::{directory::Directory, policy::Role, NodeError};
use kurzdraht_envelope::{sign_directory, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// How long the federation CA's certificate is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long an agency's TLS certificate is valid by default (renew it before: `config check`
/// warns 60 days ahead, the metric `kurzdraht_certificate_expiry_seconds` counts down).
pub const CERTIFICATE_VALIDITY_DAYS: i64 = 365;
/// The longest validity `sign-request` gives an agency's certificate: 13 months (a year and
/// a month of overlap for the renewal).
pub const MAX_CERTIFICATE_DAYS: i64 = 396;

/// One agency to set up.
#[derive(Debug, Clone)]
pub struct AgencySpec {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub peer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Where the node serves Prometheus metrics (plain HTTP); `None`: a commented example.
    pub metrics_addr: Option<SocketAddr>,
    /// Its entries of `competence` in the directory (`plz:…`, `ars:…`).
    pub competence: Vec<String>,
}

/// The three agencies of Kreis Segeberg, with the given (peer, api) addresses and no
/// metrics listener (set `metrics_addr` for one). The Norderstedt office is competent for
/// Norderstedt's postal codes and region key, the Kreis office for the rest of the county.
pub fn segeberg(addrs: [(SocketAddr, SocketAddr); 3]) -> Vec<AgencySpec> {
    let names: [(&str, &str, Role, &[&str]); 3] = [
        (
            "jobcenter-segeberg",
            "Jobcenter Kreis Segeberg",
            Role::Jobcenter,
            &["ars:01060"],
        ),
        (
            "jugendamt-kreis-segeberg",
            "Jugendamt Kreis Segeberg",
            Role::Jugendamt,
            &["ars:01060"],
        ),
        (
            "jugendamt-norderstedt",
            "Jugendamt der Stadt Norderstedt",
            Role::Jugendamt,
            &[
                "plz:22844",
                "plz:22846",
                "plz:22848",
                "plz:22850",
                "plz:22851",
                "ars:010600063063",
            ],
        ),
    ];
    names
        .into_iter()
        .zip(addrs)
        .map(
            |((id, name, role, competence), (peer_addr, api_addr))| AgencySpec {
                id: id.into(),
                name: name.into(),
                role,
                peer_addr,
                api_addr,
                metrics_addr: None,
                competence: competence.iter().map(|c| c.to_string()).collect(),
            },
        )
        .collect()
}

/// What `init` wrote for one agency.
#[derive(Debug, Clone)]
pub struct AgencyFiles {
    pub id: String,
    pub dir: PathBuf,
    pub node_config: PathBuf,
    pub client_config: PathBuf,
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Certificate(format!("{what}: {e}"))
}

/// Writes a new file (never overwriting one); `secret` files get mode 0600 before any
/// content is written. Errors name the file.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), NodeError> {
    use std::io::Write;
    let failed = |e: std::io::Error| {
        NodeError::config("output", format!("cannot write {}: {e}", path.display()))
    };
    refuse_existing(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(failed)?;
    f.write_all(contents.as_bytes()).map_err(failed)?;
    f.sync_all().map_err(failed)?;
    Ok(())
}

/// Replaces a public file in place (an edited node.toml, a new directory): written beside
/// it and renamed over it, so a reader sees the old file or the new one.
pub fn replace_file(path: &Path, contents: &str) -> Result<(), NodeError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, contents, false)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| NodeError::config("output", format!("cannot replace {}: {e}", path.display())))
}

/// A random token of 32 bytes, hex.
pub fn random_token() -> Result<String, NodeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| pki_err("randomness", e))?;
    Ok(hex::encode(bytes))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Valid from an hour ago (clocks differ a little) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn random_serial() -> Result<SerialNumber, NodeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| pki_err("randomness", e))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and of full length
    Ok(SerialNumber::from_slice(&bytes))
}

/// A new federation CA: (certificate PEM, key PEM), valid [`CA_VALIDITY_DAYS`].
pub fn new_ca() -> Result<(String, String), NodeError> {
    let key = KeyPair::generate().map_err(|e| pki_err("CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA", e))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kurzdraht federation CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(|e| pki_err("CA", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new TLS key and a certificate request naming agency `id` (its only DNS name) and
/// organisation `name`: (request PEM, key PEM). The key never leaves the agency's host.
pub fn tls_request(id: &str, name: &str) -> Result<(String, String), NodeError> {
    let key = KeyPair::generate().map_err(|e| pki_err("TLS key", e))?;
    let key_pem = key.serialize_pem();
    Ok((request_with_key(id, name, &key)?, key_pem))
}

/// A certificate request for agency `id` with the TLS key already in use (`key_pem`), to
/// renew its certificate without a new key (`pki tls-request --reuse-key`).
pub fn tls_request_for_key(id: &str, name: &str, key_pem: &str) -> Result<String, NodeError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        NodeError::config("--reuse-key", format!("is not a readable private key: {e}"))
    })?;
    request_with_key(id, name, &key)
}

fn request_with_key(id: &str, name: &str, key: &KeyPair) -> Result<String, NodeError> {
    kurzdraht_envelope::agency::validate_agency_id("--agency", id)
        .map_err(|e| NodeError::config("--agency", e.to_string()))?;
    let mut params =
        CertificateParams::new(vec![id.to_string()]).map_err(|e| pki_err("request", e))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(|e| pki_err("request", e))
}

/// What a certificate says, read from its PEM.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// Its DNS names (an agency certificate names exactly its agency id).
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Its SubjectPublicKeyInfo (DER).
    pub public_key: Vec<u8>,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// Its fingerprint as the directory names it (SHA-256 of the DER form, hex).
    pub sha256: String,
}

/// Reads a certificate PEM; `key` names it in errors.
pub fn certificate_info(key: &str, pem: &str) -> Result<CertificateInfo, NodeError> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| NodeError::config(key, format!("holds no PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| NodeError::config(key, format!("is not a readable certificate: {e}")))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertificateInfo {
        names,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        public_key: cert.tbs_certificate.subject_pki.raw.to_vec(),
        is_ca: cert.is_ca(),
        sha256: crate::directory::certificate_fingerprint(&der),
    })
}

/// The SubjectPublicKeyInfo of a private key PEM.
pub fn key_public_info(key: &str, pem: &str) -> Result<Vec<u8>, NodeError> {
    let pair = KeyPair::from_pem(pem)
        .map_err(|e| NodeError::config(key, format!("is not a readable private key: {e}")))?;
    Ok(pair.subject_public_key_info())
}

fn organisation(dn: &DistinguishedName) -> Option<String> {
    match dn.get(&DnType::OrganizationName)? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The CA's part: a certificate for agency `agency` from its request, valid `days`, signed
/// with the CA key. The request must be validly signed and name exactly `agency`; of it only
/// its public key and organisation name are taken, every other field is the CA's.
pub fn sign_request(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    request_pem: &str,
    agency: &str,
    days: i64,
) -> Result<String, NodeError> {
    kurzdraht_envelope::agency::validate_agency_id("--agency", agency)
        .map_err(|e| NodeError::config("--agency", e.to_string()))?;
    if !(1..=MAX_CERTIFICATE_DAYS).contains(&days) {
        return Err(NodeError::config(
            "--days",
            format!("must lie between 1 and {MAX_CERTIFICATE_DAYS} (13 months)"),
        ));
    }
    let ca = certificate_info("--ca-cert", ca_cert_pem)?;
    if !ca.is_ca {
        return Err(NodeError::config("--ca-cert", "is no CA certificate"));
    }
    if key_public_info("--ca-key", ca_key_pem)? != ca.public_key {
        return Err(NodeError::config(
            "--ca-key",
            "is not the key of the CA certificate given with --ca-cert",
        ));
    }
    let request = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| {
        NodeError::config(
            "--csr",
            format!("is not a validly signed certificate request: {e}"),
        )
    })?;
    let names: Vec<String> = request
        .params
        .subject_alt_names
        .iter()
        .map(|n| match n {
            SanType::DnsName(d) => d.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    if names != [agency] {
        return Err(NodeError::config(
            "--csr",
            format!(
                "the request names [{}], not exactly the agency {agency}",
                names.join(", ")
            ),
        ));
    }
    let name = organisation(&request.params.distinguished_name).unwrap_or_else(|| agency.into());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| pki_err("CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| pki_err("CA", e))?;
    let mut params =
        CertificateParams::new(vec![agency.to_string()]).map_err(|e| pki_err("certificate", e))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, agency);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, days);
    let cert = params
        .signed_by(&request.public_key, &issuer)
        .map_err(|e| pki_err("certificate", e))?;
    Ok(cert.pem())
}

/// Writes a new Ed25519 signing key (hex seed, mode 0600) to `path`, which must not exist;
/// returns its public key (hex) for the directory's `signing_keys`.
pub fn new_signing_key(path: &Path) -> Result<String, NodeError> {
    refuse_existing(path)?;
    let key = SigningKey::generate()?;
    write_file(path, &format!("{}\n", key.to_hex()), true)?;
    Ok(key.verifying_key().to_hex())
}

/// Writes a new data key (64 hex digits and a line feed, mode 0600) to `path`.
pub fn new_data_key(path: &Path) -> Result<(), NodeError> {
    refuse_existing(path)?;
    let key = kurzdraht_ledger::DataKey::generate()?;
    write_file(path, &format!("{}\n", key.to_hex()), true)
}

/// Writes a new API token (mode 0600) to `path`; returns the `[api] tokens` entry naming
/// `client` with the token's SHA-256, for node.toml.
pub fn new_api_token(path: &Path, client: &str) -> Result<String, NodeError> {
    refuse_existing(path)?;
    let token = random_token()?;
    write_file(path, &format!("{token}\n"), true)?;
    Ok(format!(
        "{{ client = \"{client}\", sha256 = \"{}\" }}",
        token_hash(&token)
    ))
}

/// The federation operator's key pair: `dir/operator.key` (mode 0600) and
/// `dir/operator.pub`; returns the public key (hex).
pub fn new_operator_key(dir: &Path) -> Result<String, NodeError> {
    let secret = dir.join("operator.key");
    let public = dir.join("operator.pub");
    refuse_existing(&secret)?;
    refuse_existing(&public)?;
    let key = SigningKey::generate()?;
    write_file(&secret, &format!("{}\n", key.to_hex()), true)?;
    let hex = key.verifying_key().to_hex();
    write_file(&public, &format!("{hex}\n"), false)?;
    Ok(hex)
}

/// Signs the directory file at `path` with the operator key (hex seed) after validating it,
/// and writes the signature beside it (`<path>.sig`, replacing an older one). Returns the
/// directory as signed.
pub fn sign_directory_file(path: &Path, operator_seed: &str) -> Result<Directory, NodeError> {
    let operator = SigningKey::from_hex(operator_seed)
        .map_err(|e| NodeError::config("--key", e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::config("directory", format!("cannot read {}: {e}", path.display()))
    })?;
    let directory = Directory::from_toml(&text)?;
    let signature = sign_directory(text.as_bytes(), &operator);
    replace_file(
        &crate::directory::signature_path(path),
        &crate::directory::signature_file(&signature, &operator.verifying_key()),
    )?;
    Ok(directory)
}

/// `text` with its `version = …` line set to `version`.
pub fn with_version(text: &str, version: u64) -> Result<String, NodeError> {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with("version") && l.contains('=') {
                found = true;
                format!("version = {version}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        return Err(NodeError::config("directory.version", "is missing"));
    }
    Ok(lines.join("\n") + "\n")
}

/// For a federation made by [`init`] in `dir` (demos, tests, benchmarks): replaces its
/// directory by `edit` of it at the next version, signed with `dir/operator.key`.
pub fn update_directory(
    dir: &Path,
    edit: impl FnOnce(&str) -> String,
) -> Result<Directory, NodeError> {
    let path = dir.join("directory.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        NodeError::config("directory", format!("cannot read {}: {e}", path.display()))
    })?;
    let version = Directory::from_toml(&text)?.version() + 1;
    replace_file(&path, &with_version(&edit(&text), version)?)?;
    let operator = crate::config::read_secret("operator.key", &dir.join("operator.key"))?;
    sign_directory_file(&path, &operator)
}

/// Refuses to overwrite `path` (a key must never be replaced by accident).
pub fn refuse_existing(path: &Path) -> Result<(), NodeError> {
    if path.exists() {
        return Err(NodeError::config(
            "output",
            format!("{} exists; choose a new file name", path.display()),
        ));
    }
    Ok(())
}

/// A signing key's file name with the month it was made, e.g. `signing-2026-11.key`, so
/// that a rotation never needs to overwrite or rename one.
pub fn dated_signing_key_name() -> String {
    let today = OffsetDateTime::now_utc().date();
    format!(
        "signing-{}-{:02}.key",
        today.year(),
        u8::from(today.month())
    )
}

/// An agency's entry for the directory, as `pki agency-keys` hands it to the federation
/// operator: an `[[agency]]` table, so `directory assemble` (or appending it to a directory)
/// takes it as it is.
pub fn entry_toml(spec: &AgencySpec, endpoint: &str, signing_public: &str) -> String {
    let competence = spec
        .competence
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[agency]]\nid = \"{id}\"\nname = \"{name}\"\nrole = \"{role}\"\nendpoint = \"{endpoint}\"\n\
         competence = [{competence}]\nsigning_keys = [{{ key = \"{signing_public}\", state = \"active\" }}]\n",
        id = spec.id,
        name = spec.name,
        role = spec.role.as_str(),
    )
}

/// A directory of version `version` from the agencies' entries ([`entry_toml`]), validated.
pub fn assemble_directory(version: u64, entries: &[String]) -> Result<String, NodeError> {
    let mut text = format!(
        "# kurzdraht directory: every agency, its role, peer endpoint, competence and pinned keys.\n\
         # Signed by the federation operator (directory.toml.sig); raise the version with every change.\n\
         version = {version}\n"
    );
    for entry in entries {
        text.push('\n');
        text.push_str(entry.trim_end());
        text.push('\n');
    }
    Directory::from_toml(&text)?;
    Ok(text)
}

/// The next directory version: every agency of `current` (a directory's text) as it stands
/// there — with its keys in their states, retired and revoked ones too — and then the new
/// agencies' entries, under `version`, which must be higher than `current`'s. Validated
/// like any directory: an agency listed twice, or a place claimed by two agencies of one
/// role, is refused.
pub fn extend_directory(
    current: &str,
    version: u64,
    entries: &[String],
) -> Result<String, NodeError> {
    let in_force = Directory::from_toml(current)?;
    if version <= in_force.version() {
        return Err(NodeError::config(
            "--version",
            format!(
                "must be higher than version {} of the current directory",
                in_force.version()
            ),
        ));
    }
    // `version` is a top-level key, so it stands before the first `[[agency]]`; everything
    // from there on is the agencies, taken as they are written.
    let mut offset = 0;
    let mut agencies = None;
    for line in current.split_inclusive('\n') {
        if line.trim_start().starts_with("[[agency]]") {
            agencies = Some(&current[offset..]);
            break;
        }
        offset += line.len();
    }
    let agencies = agencies
        .ok_or_else(|| NodeError::config("--from", "the current directory lists no agency"))?;
    let mut texts = vec![agencies.to_string()];
    texts.extend(entries.iter().cloned());
    assemble_directory(version, &texts)
}

/// Where a node's files are, relative to its node.toml.
struct NodePaths<'a> {
    data_dir: &'a str,
    directory: &'a str,
    operator_key: &'a str,
    ca_cert: &'a str,
    signing_key: &'a str,
}

fn node_toml(spec: &AgencySpec, paths: &NodePaths<'_>, token_entry: &str) -> String {
    let metrics_section = match spec.metrics_addr {
        Some(m) => format!(
            "[metrics]\n# Prometheus text format over plain HTTP: keep it on loopback or a monitoring network\nlisten = \"{m}\"\n\n"
        ),
        None => "# [metrics]\n# listen = \"127.0.0.1:9464\"   # Prometheus text format over plain HTTP\n\n"
            .to_string(),
    };
    format!(
        "# kurzdraht node: {name}\nagency = \"{id}\"\ndata_dir = \"{data_dir}\"\n\n\
         [directory]\n# signed by the federation operator (the .sig file beside it); a newer version is taken while running\n\
         file = \"{directory}\"\noperator_key = \"{operator_key}\"\n\n\
         [listen]\npeer = \"{peer}\"\napi = \"{api}\"\n\n\
         {metrics}\
         [tls]\nca_cert = \"{ca}\"\ncert = \"tls.pem\"\nkey = \"tls.key\"\n\n\
         [signing]\nkey_file = \"{signing}\"\n\n\
         [storage]\n# seals personal data in the store; keep it outside data_dir and back it up apart\ndata_key_file = \"data.key\"\n\n\
         [api]\n# SHA-256 of each IT system's bearer token\ntokens = [{token}]\n\n\
         [delivery]\nretry_initial_ms = 250\nretry_max_ms = 300000\ndeadline_secs = 604800\n\n\
         [limits]\nreplay_window_hours = 192\nclock_skew_secs = 300\n\n\
         [retention]\n# message bodies are deleted this long after their case is closed\nbody_retention_secs = 31536000\nsweep_interval_secs = 3600\n",
        name = spec.name,
        id = spec.id,
        data_dir = paths.data_dir,
        directory = paths.directory,
        operator_key = paths.operator_key,
        peer = spec.peer_addr,
        api = spec.api_addr,
        metrics = metrics_section,
        ca = paths.ca_cert,
        signing = paths.signing_key,
        token = token_entry,
    )
}

fn client_toml(spec: &AgencySpec, api_endpoint: &str, ca_cert: &str) -> String {
    format!(
        "# How {name}'s IT systems reach their node's AgencyApi\nagency = \"{id}\"\nendpoint = \"{api_endpoint}\"\nca_cert = \"{ca_cert}\"\ntoken_file = \"api-token\"\n",
        name = spec.name,
        id = spec.id,
    )
}

/// `https://` and the address an IT system on the node's host reaches `addr` at (an
/// unspecified listen address becomes loopback).
pub fn local_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("https://{addr}")
}

/// What `pki agency-keys` made on the agency's host.
#[derive(Debug, Clone)]
pub struct AgencyKeyFiles {
    /// To the federation CA: the certificate request.
    pub request: PathBuf,
    /// To the federation operator: the agency's directory entry.
    pub entry: PathBuf,
    /// Stay here (mode 0600): TLS key, signing key, data key.
    pub secrets: Vec<PathBuf>,
    /// To the agency's IT systems (and then deleted here): the token and client.toml.
    pub for_it_systems: Vec<PathBuf>,
    pub node_config: PathBuf,
    /// The public signing key (hex).
    pub signing_public: String,
}

/// An agency's own part of the ceremony, on its own host: in `dir` (created if missing; no
/// file in it is overwritten) a TLS key and a request for its certificate, a signing key
/// (dated), a data key, an API token, node.toml and client.toml (pointing at `ca.pem`,
/// `tls.pem`, `directory.toml` and `operator.pub`, which arrive later, in `dir`), and the
/// agency's directory entry. `endpoint` is where the peers reach its PeerExchange;
/// `data_dir` the node's store (relative paths are relative to `dir`).
pub fn agency_keys(
    dir: &Path,
    spec: &AgencySpec,
    endpoint: &str,
    data_dir: &str,
) -> Result<AgencyKeyFiles, NodeError> {
    if data_dir.contains(['"', '\\', '\n']) {
        return Err(NodeError::config(
            "--data-dir",
            "must not hold quotes, backslashes or line breaks",
        ));
    }
    if !endpoint.starts_with("https://") {
        return Err(NodeError::config("--endpoint", "must be an https:// URL"));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| NodeError::config("--dir", format!("cannot create {}: {e}", dir.display())))?;
    let signing_name = dated_signing_key_name();
    let request = dir.join("tls.csr");
    let entry = dir.join(format!("{}.entry.toml", spec.id));
    let tls_key = dir.join("tls.key");
    let signing = dir.join(&signing_name);
    let data = dir.join("data.key");
    let token = dir.join("api-token");
    let node_config = dir.join("node.toml");
    let client_config = dir.join("client.toml");
    for path in [
        &request,
        &entry,
        &tls_key,
        &signing,
        &data,
        &token,
        &node_config,
        &client_config,
    ] {
        refuse_existing(path)?;
    }
    let (request_pem, key_pem) = tls_request(&spec.id, &spec.name)?;
    write_file(&tls_key, &key_pem, true)?;
    write_file(&request, &request_pem, false)?;
    let signing_public = new_signing_key(&signing)?;
    new_data_key(&data)?;
    let token_entry = new_api_token(&token, &format!("{}-it", spec.id))?;
    let entry_text = format!(
        "# Directory entry of {} (public): send it to the federation operator.\n{}",
        spec.id,
        entry_toml(spec, endpoint, &signing_public)
    );
    // The entry must be one a directory takes.
    assemble_directory(1, std::slice::from_ref(&entry_text))?;
    write_file(&entry, &entry_text, false)?;
    let paths = NodePaths {
        data_dir,
        directory: "directory.toml",
        operator_key: "operator.pub",
        ca_cert: "ca.pem",
        signing_key: &signing_name,
    };
    write_file(&node_config, &node_toml(spec, &paths, &token_entry), false)?;
    write_file(
        &client_config,
        &client_toml(spec, &local_url(spec.api_addr), "ca.pem"),
        false,
    )?;
    Ok(AgencyKeyFiles {
        request,
        entry,
        secrets: vec![tls_key, signing, data],
        for_it_systems: vec![token, client_config],
        node_config,
        signing_public,
    })
}

/// Creates the federation in `dir` (which must not yet hold one) on one machine — the
/// shortcut for demos and tests: every agency's secrets end up in `dir`.
pub fn init(dir: &Path, agencies: &[AgencySpec]) -> Result<Vec<AgencyFiles>, NodeError> {
    if dir.join("directory.toml").exists() {
        return Err(NodeError::config(
            "--dir",
            format!(
                "{} already holds a federation (directory.toml exists)",
                dir.display()
            ),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let (ca_pem, ca_key) = new_ca()?;
    write_file(&dir.join("ca.pem"), &ca_pem, false)?;
    write_file(&dir.join("ca.key"), &ca_key, true)?;
    new_operator_key(dir)?;

    let mut entries = Vec::new();
    let mut out = Vec::new();
    for a in agencies {
        let adir = dir.join(&a.id);
        std::fs::create_dir_all(&adir)?;
        // TLS certificate naming the agency id, for both server and client authentication.
        let (request, key_pem) = tls_request(&a.id, &a.name)?;
        let cert_pem = sign_request(&ca_pem, &ca_key, &request, &a.id, CERTIFICATE_VALIDITY_DAYS)?;
        write_file(&adir.join("tls.pem"), &cert_pem, false)?;
        write_file(&adir.join("tls.key"), &key_pem, true)?;
        let signing_public = new_signing_key(&adir.join("signing.key"))?;
        // Data key for encryption at rest, beside (not inside) the data directory.
        new_data_key(&adir.join("data.key"))?;
        let token_entry = new_api_token(&adir.join("api-token"), &format!("{}-it", a.id))?;
        entries.push(entry_toml(
            a,
            &format!("https://{}", a.peer_addr),
            &signing_public,
        ));
        let paths = NodePaths {
            data_dir: "data",
            directory: "../directory.toml",
            operator_key: "../operator.pub",
            ca_cert: "../ca.pem",
            signing_key: "signing.key",
        };
        write_file(
            &adir.join("node.toml"),
            &node_toml(a, &paths, &token_entry),
            false,
        )?;
        write_file(
            &adir.join("client.toml"),
            &client_toml(a, &format!("https://{}", a.api_addr), "../ca.pem"),
            false,
        )?;
        out.push(AgencyFiles {
            id: a.id.clone(),
            node_config: adir.join("node.toml"),
            client_config: adir.join("client.toml"),
            dir: adir,
        });
    }
    let directory = dir.join("directory.toml");
    write_file(&directory, &assemble_directory(1, &entries)?, false)?;
    let operator = std::fs::read_to_string(dir.join("operator.key"))?;
    sign_directory_file(&directory, &operator)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, role: &str, key: &str, competence: &str) -> String {
        format!(
            "[[agency]]\nid = \"{id}\"\nname = \"{id}\"\nrole = \"{role}\"\n\
             endpoint = \"https://{id}.example:7443\"\ncompetence = [{competence}]\n\
             signing_keys = [{key}]\n"
        )
    }

    /// `directory assemble --from`: the agencies of the current version stay as they are
    /// (a retired key keeps its state and day), the new entry follows, the version rises.
    #[test]
    fn a_directory_is_extended_by_an_agency_keeping_every_key_state() {
        let key = |n: u8| {
            SigningKey::from_hex(&hex::encode([n; 32]))
                .expect("a seed")
                .verifying_key()
                .to_hex()
        };
        let current = assemble_directory(
            3,
            &[
                entry(
                    "jobcenter-segeberg",
                    "jobcenter",
                    &format!(
                        "{{ key = \"{}\", state = \"retired\", since = \"2026-11-01\" }}, {{ key = \"{}\", state = \"active\" }}",
                        key(1),
                        key(2)
                    ),
                    "\"ars:01060\"",
                ),
                entry(
                    "jugendamt-kreis-segeberg",
                    "jugendamt",
                    &format!("{{ key = \"{}\", state = \"active\" }}", key(3)),
                    "\"ars:01060\"",
                ),
            ],
        )
        .expect("version 3");
        let fourth = entry(
            "jugendamt-neumuenster",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(4)),
            "\"ars:01004\", \"plz:24534\"",
        );
        let next = extend_directory(&current, 4, std::slice::from_ref(&fourth)).expect("v4");
        let d = Directory::from_toml(&next).expect("valid");
        assert_eq!(d.version(), 4);
        let ids: Vec<&str> = d.agencies().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "jobcenter-segeberg",
                "jugendamt-kreis-segeberg",
                "jugendamt-neumuenster"
            ]
        );
        let jc = d.get("jobcenter-segeberg").expect("jc");
        assert_eq!(jc.keys.len(), 2);
        assert_eq!(jc.keys[0].state.to_string(), "retired since 2026-11-01");
        let new = d.get("jugendamt-neumuenster").expect("new");
        assert_eq!(
            d.competent(Role::Jugendamt, "24534", "")
                .map(|a| a.id.as_str()),
            Some("jugendamt-neumuenster")
        );
        assert_eq!(new.competence.len(), 2);
        // the current agencies' text is kept byte for byte
        let agencies = &current[current.find("[[agency]]").expect("agency")..];
        assert!(next.contains(agencies.trim_end()), "{next}");
        // the version must rise
        for version in [3, 2] {
            let e = extend_directory(&current, version, std::slice::from_ref(&fourth)).unwrap_err();
            assert!(
                e.to_string().contains("--version")
                    && e.to_string().contains("higher than version 3"),
                "{e}"
            );
        }
        // an agency already there, or a place another Jugendamt holds, is refused
        let again = entry(
            "jugendamt-kreis-segeberg",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(5)),
            "",
        );
        let e = extend_directory(&current, 4, &[again]).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let clash = entry(
            "jugendamt-neumuenster",
            "jugendamt",
            &format!("{{ key = \"{}\", state = \"active\" }}", key(4)),
            "\"ars:01060\"",
        );
        let e = extend_directory(&current, 4, &[clash]).unwrap_err();
        assert!(
            e.to_string().contains(
                "ars:01060 is claimed by both jugendamt-kreis-segeberg and jugendamt-neumuenster"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_ca_signs_only_a_request_naming_exactly_the_agency() {
        let (ca_pem, ca_key) = new_ca().expect("CA");
        let (request, key) = tls_request("jobcenter-segeberg", "Jobcenter").expect("request");
        let cert =
            sign_request(&ca_pem, &ca_key, &request, "jobcenter-segeberg", 365).expect("signed");
        let info = certificate_info("cert", &cert).expect("readable");
        assert_eq!(info.names, ["jobcenter-segeberg"]);
        assert_eq!(info.public_key, key_public_info("key", &key).expect("key"));
        let days = (info.not_after - info.not_before).whole_days();
        assert!((365..=366).contains(&days), "{days} days");
        // no longer than 13 months
        match sign_request(&ca_pem, &ca_key, &request, "jobcenter-segeberg", 397) {
            Err(NodeError::Config { key, .. }) => assert_eq!(key, "--days"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // renewal with the same key: a new request, the same public key
        let renewal = tls_request_for_key("jobcenter-segeberg", "Jobcenter", &key).expect("csr");
        let renewed =
            sign_request(&ca_pem, &ca_key, &renewal, "jobcenter-segeberg", 365).expect("signed");
        let renewed = certificate_info("cert", &renewed).expect("readable");
        assert_eq!(renewed.public_key, info.public_key);
        let ca = certificate_info("ca", &ca_pem).expect("readable");
        assert!(ca.is_ca);
        assert!((3650..=3651).contains(&(ca.not_after - ca.not_before).whole_days()));
        // a request for another agency is refused, naming what it names
        match sign_request(&ca_pem, &ca_key, &request, "jugendamt-norderstedt", 365) {
            Err(NodeError::Config { key, reason }) => {
                assert_eq!(key, "--csr");
                assert!(reason.contains("[jobcenter-segeberg]"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // a CA key that is not the CA certificate's
        let (_, other_key) = new_ca().expect("CA");
        match sign_request(&ca_pem, &other_key, &request, "jobcenter-segeberg", 365) {
            Err(NodeError::Config { key, .. }) => assert_eq!(key, "--ca-key"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // a tampered request does not verify
        let tampered = request.replacen("MII", "MIJ", 1);
        assert!(sign_request(&ca_pem, &ca_key, &tampered, "jobcenter-segeberg", 365).is_err());
    }

    #[test]
    fn files_are_never_overwritten_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("signing.key");
        new_signing_key(&path).expect("first");
        let before = std::fs::read(&path).expect("read");
        let e = new_signing_key(&path).expect_err("second");
        assert!(e.to_string().contains("signing.key exists"), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), before);
        let e = write_file(&dir.path().join("no/such/dir/x"), "x", false).expect_err("no dir");
        assert!(e.to_string().contains("no/such/dir/x"), "{e}");
    }
}
