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
}

/// The three agencies of Kreis Segeberg, with the given (peer, api) addresses.
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
        })
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
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kurzdraht federation CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
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
        let key = KeyPair::generate().map_err(|e| pki_err("TLS key", e))?;
        let mut params =
            CertificateParams::new(vec![a.id.clone()]).map_err(|e| pki_err("certificate", e))?;
        params.distinguished_name.push(DnType::CommonName, &a.id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, &a.name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| pki_err("certificate", e))?;
        write_file(&adir.join("tls.pem"), &cert.pem(), false)?;
        write_file(&adir.join("tls.key"), &key.serialize_pem(), true)?;
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
        let node_toml = format!(
            "# kurzdraht node: {name}\nagency = \"{id}\"\ndata_dir = \"data\"\ndirectory = \"../directory.toml\"\n\n\
             [listen]\npeer = \"{peer}\"\napi = \"{api}\"\n\n\
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
