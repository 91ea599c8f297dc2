//! Setting a node up: its node.toml and client.toml, `pki agency-keys` (an agency's own part
//! of the ceremony, on its host) and `pki init` (a whole federation on one machine).

use super::*;
use crate::NodeError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    let console_section = match spec.console_addr {
        Some(c) => format!(
            "[console]\n# the web console for caseworkers, HTTPS with this node's certificate\nlisten = \"{c}\"\nidle_timeout_secs = 900\n\n"
        ),
        None => "# [console]\n# listen = \"127.0.0.1:8443\"   # the web console (HTTPS); accounts: kurzdraht user add\n\n"
            .to_string(),
    };
    format!(
        "# kurzdraht node: {name}\nagency = \"{id}\"\ndata_dir = \"{data_dir}\"\n\n\
         [directory]\n# signed by the federation operator (the .sig file beside it); a newer version is taken while running\n\
         file = \"{directory}\"\noperator_key = \"{operator_key}\"\n\n\
         [listen]\npeer = \"{peer}\"\napi = \"{api}\"\n\n\
         {metrics}\
         {console}\
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
        console = console_section,
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
