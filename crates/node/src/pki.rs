//! `kurzdraht pki init`: a federation CA, and for each agency a TLS certificate, an Ed25519
//! signing key, an API token, its `node.toml` and `client.toml`, plus the shared directory.
//!
//! ```text
//! DIR/ca.pem  ca.key             federation CA (keep ca.key offline)
//! DIR/directory.toml             agencies, roles, endpoints, pinned signing keys
//! DIR/<agency>/node.toml         the node's configuration
//! DIR/<agency>/tls.pem tls.key   the agency's certificate (server and client) and key
//! DIR/<agency>/signing.key       Ed25519 seed (hex)
//! DIR/<agency>/data.key          ChaCha20-Poly1305 key sealing personal data in the store
//! DIR/<agency>/api-token         the IT system's bearer token (node.toml holds its hash)
//! DIR/<agency>/client.toml       how the IT system reaches the node
//! ```
//! Secret files are written with mode 0600.
//!
//! For rotation, [`issue_certificate`] makes a further agency certificate from `ca.key`, and
//! [`new_signing_key`] a further signing key (`kurzdraht pki certificate`, `pki signing-key`).

use crate::{policy::Role, NodeError};
use kurzdraht_envelope::SigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

/// The three agencies of Kreis Segeberg, with the given (peer, api) addresses and no
/// metrics listener (set `metrics_addr` for one).
pub fn segeberg(addrs: [(SocketAddr, SocketAddr); 3]) -> Vec<AgencySpec> {
    let names = [
        (
            "jobcenter-segeberg",
            "Jobcenter Kreis Segeberg",
            Role::Jobcenter,
        ),
        (
            "jugendamt-kreis-segeberg",
            "Jugendamt Kreis Segeberg",
            Role::Jugendamt,
        ),
        (
            "jugendamt-norderstedt",
            "Jugendamt der Stadt Norderstedt",
            Role::Jugendamt,
        ),
    ];
    names
        .into_iter()
        .zip(addrs)
        .map(|((id, name, role), (peer_addr, api_addr))| AgencySpec {
            id: id.into(),
            name: name.into(),
            role,
            peer_addr,
            api_addr,
            metrics_addr: None,
        })
        .collect()
}

/// `n` distinct free loopback addresses: all bound at once (so none repeats), then released
/// for the caller to configure. Another process may take one in between; for local
/// federations, demos and tests that is good enough.
pub fn free_loopback_addrs(n: usize) -> Result<Vec<SocketAddr>, NodeError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()?)
}

/// The three Segeberg agencies on free loopback ports (peer, API and, with `metrics`, a
/// metrics port each).
pub fn segeberg_on_free_ports(metrics: bool) -> Result<Vec<AgencySpec>, NodeError> {
    let a = free_loopback_addrs(9)?;
    let mut specs = segeberg([(a[0], a[1]), (a[3], a[4]), (a[6], a[7])]);
    if metrics {
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.metrics_addr = Some(a[3 * i + 2]);
        }
    }
    Ok(specs)
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
    NodeError::Tls(format!("{what}: {e}"))
}

/// Writes a file; `secret` files get mode 0600 before any content is written.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), NodeError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
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

/// The federation CA's certificate parameters. Deterministic, so that the CA key alone
/// (`ca.key`) suffices to issue further agency certificates that chain to `ca.pem`.
fn ca_params() -> Result<CertificateParams, NodeError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kurzdraht federation CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A new key pair and a certificate naming agency `id` (its DNS SAN), for server and client
/// authentication, signed by `issuer`: (certificate PEM, key PEM).
fn agency_certificate<S: rcgen::SigningKey>(
    id: &str,
    name: &str,
    issuer: &Issuer<'_, S>,
) -> Result<(String, String), NodeError> {
    let key = KeyPair::generate().map_err(|e| pki_err("TLS key", e))?;
    let mut params =
        CertificateParams::new(vec![id.to_string()]).map_err(|e| pki_err("certificate", e))?;
    params.distinguished_name.push(DnType::CommonName, id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| pki_err("certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a further TLS certificate for agency `id` (organisation `name`) with the
/// federation CA key `ca_key_pem` — for rotation: peers accept any certificate of the
/// federation CA that names the agency. Returns (certificate PEM, key PEM).
pub fn issue_certificate(
    ca_key_pem: &str,
    id: &str,
    name: &str,
) -> Result<(String, String), NodeError> {
    kurzdraht_envelope::agency::validate_agency_id("--agency", id)
        .map_err(|e| NodeError::config("--agency", e.to_string()))?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| pki_err("CA key", e))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    agency_certificate(id, name, &issuer)
}

/// Writes a new Ed25519 signing key (hex seed, mode 0600) to `path`, which must not exist;
/// returns its public key (hex) for the directory's `signing_keys`.
pub fn new_signing_key(path: &Path) -> Result<String, NodeError> {
    refuse_existing(path)?;
    let key = SigningKey::generate()?;
    write_file(path, &format!("{}\n", key.to_hex()), true)?;
    Ok(key.verifying_key().to_hex())
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

/// Creates the federation in `dir` (which must not yet hold one).
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
    // Federation CA.
    let ca_key = KeyPair::generate().map_err(|e| pki_err("CA key", e))?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| pki_err("CA", e))?;
    write_file(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write_file(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut directory = String::from(
        "# kurzdraht directory: every agency, its role, peer endpoint and pinned Ed25519 keys.\n",
    );
    let mut out = Vec::new();
    for a in agencies {
        let adir = dir.join(&a.id);
        std::fs::create_dir_all(&adir)?;
        // TLS certificate naming the agency id, for both server and client authentication.
        let (cert_pem, key_pem) = agency_certificate(&a.id, &a.name, &issuer)?;
        write_file(&adir.join("tls.pem"), &cert_pem, false)?;
        write_file(&adir.join("tls.key"), &key_pem, true)?;
        // Signing key.
        let signing = SigningKey::generate()?;
        write_file(
            &adir.join("signing.key"),
            &format!("{}\n", signing.to_hex()),
            true,
        )?;
        // Data key for encryption at rest, beside (not inside) the data directory.
        let data_key = kurzdraht_ledger::DataKey::generate()?;
        write_file(
            &adir.join("data.key"),
            &format!("{}\n", data_key.to_hex()),
            true,
        )?;
        // API token for the agency's IT system.
        let token = random_token()?;
        write_file(&adir.join("api-token"), &format!("{token}\n"), true)?;

        let _ = write!(
            directory,
            "\n[[agency]]\nid = \"{}\"\nname = \"{}\"\nrole = \"{}\"\nendpoint = \"https://{}\"\nsigning_keys = [\"{}\"]\n",
            a.id,
            a.name,
            a.role.as_str(),
            a.peer_addr,
            signing.verifying_key().to_hex()
        );
        let metrics_section = match a.metrics_addr {
            Some(m) => format!(
                "[metrics]\n# Prometheus text format over plain HTTP: keep it on loopback or a monitoring network\nlisten = \"{m}\"\n\n"
            ),
            None => "# [metrics]\n# listen = \"127.0.0.1:9464\"   # Prometheus text format over plain HTTP\n\n"
                .to_string(),
        };
        let node_toml = format!(
            "# kurzdraht node: {name}\nagency = \"{id}\"\ndata_dir = \"data\"\ndirectory = \"../directory.toml\"\n\n\
             [listen]\npeer = \"{peer}\"\napi = \"{api}\"\n\n\
             {metrics}\
             [tls]\nca_cert = \"../ca.pem\"\ncert = \"tls.pem\"\nkey = \"tls.key\"\n\n\
             [signing]\nkey_file = \"signing.key\"\n\n\
             [storage]\n# seals personal data in the store; keep it outside data_dir and back it up apart\ndata_key_file = \"data.key\"\n\n\
             [api]\n# SHA-256 of each IT system's bearer token\ntokens = [{{ client = \"{id}-it\", sha256 = \"{hash}\" }}]\n\n\
             [delivery]\nretry_initial_ms = 250\nretry_max_ms = 300000\ndeadline_secs = 604800\n\n\
             [limits]\nreplay_window_hours = 192\nclock_skew_secs = 300\n\n\
             [retention]\n# message bodies are deleted this long after their case is closed\nbody_retention_secs = 31536000\nsweep_interval_secs = 3600\n",
            name = a.name,
            id = a.id,
            peer = a.peer_addr,
            api = a.api_addr,
            metrics = metrics_section,
            hash = token_hash(&token),
        );
        write_file(&adir.join("node.toml"), &node_toml, false)?;
        let client_toml = format!(
            "# How {name}'s IT systems reach their node's AgencyApi\nagency = \"{id}\"\nendpoint = \"https://{api}\"\nca_cert = \"../ca.pem\"\ntoken_file = \"api-token\"\n",
            name = a.name,
            id = a.id,
            api = a.api_addr,
        );
        write_file(&adir.join("client.toml"), &client_toml, false)?;
        out.push(AgencyFiles {
            id: a.id.clone(),
            node_config: adir.join("node.toml"),
            client_config: adir.join("client.toml"),
            dir: adir,
        });
    }
    write_file(&dir.join("directory.toml"), &directory, false)?;
    Ok(out)
}
