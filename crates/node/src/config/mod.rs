//! A node's configuration: one TOML file (`node.toml`), validated at load with errors that
//! name the key. Secrets (TLS key, signing key) are read from files that only the node's
//! user may read; API tokens are configured as SHA-256 hashes, never in clear.
//! Relative paths are relative to the directory of the configuration file.
//!
//! Loading proves the node's identity, so that neither `config check` nor `serve` passes a
//! node set up with another agency's files: the directory's signature verifies with the
//! pinned operator key; the certificate names this agency, chains to the CA, is valid now
//! and `tls.key` is its key; the signing key is pinned for this agency and active.

use crate::directory::{read_public_key, Directory, KeyState};
use crate::{policy::Role, NodeError};
use kurzdraht_envelope::{agency::validate_agency_id, Limits, SigningKey, VerifyingKey};
use kurzdraht_ledger::DataKey;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;
use file::*;

/// PEM material for the node's TLS.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

/// An IT system allowed to call the AgencyApi: its name and the SHA-256 of its token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub client: String,
    pub sha256: [u8; 32],
    /// May take backups and start reconciliations (`admin = true`).
    pub admin: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long after submission a message may still be delivered.
    pub deadline: Duration,
    pub request_timeout: Duration,
    /// How often each peer's reachability is probed; `None`: never.
    pub peer_probe: Option<Duration>,
    /// How long a delivered envelope is kept for peers restored from a backup.
    pub keep_delivered: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Message bodies are deleted this long after their case was closed.
    pub body_retention: Duration,
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ReceptionLimits {
    pub envelope: Limits,
    /// Envelopes created longer ago than this are refused (must exceed the delivery deadline).
    pub replay_window: Duration,
    /// Envelopes created further in the future than this are refused.
    pub clock_skew: Duration,
    /// Validity of a consent recorded without `valid_until`.
    pub consent_default_validity: Duration,
    pub peer_requests_per_second: u32,
    pub peer_concurrent_requests: u32,
}

/// The console's settings (`[console]`).
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    pub idle_timeout: Duration,
    pub max_sessions: usize,
}

/// The `[console]` section, checked.
fn console_of(file: &Option<ConsoleFile>) -> Result<Option<ConsoleSettings>, NodeError> {
    let Some(c) = file else { return Ok(None) };
    if !(60..=28_800).contains(&c.idle_timeout_secs) {
        return Err(NodeError::config(
            "console.idle_timeout_secs",
            "must be between 60 and 28800",
        ));
    }
    if !(1..=100_000).contains(&c.max_sessions) {
        return Err(NodeError::config(
            "console.max_sessions",
            "must be between 1 and 100000",
        ));
    }
    Ok(Some(ConsoleSettings {
        listen: c.listen,
        idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        max_sessions: c.max_sessions,
    }))
}

/// What callers may hold open on one of the node's ports (`[limits]`): connections,
/// HTTP/2 streams and calls per connection, header bytes and time.
#[derive(Debug, Clone, Copy)]
pub struct PortLimits {
    pub connections: usize,
    pub streams_per_connection: u32,
    /// Calls running at once per connection (more wait, their bodies unread); `None`: the
    /// port bounds concurrency per caller instead (PeerExchange: per agency, before decoding).
    pub concurrent_requests_per_connection: Option<usize>,
    /// Longest a call may take until its answer starts, request body included.
    pub request_timeout: Duration,
    pub max_header_list_bytes: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// A loaded, validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub agency: String,
    pub role: Role,
    pub data_dir: PathBuf,
    /// The directory as loaded at start (signature verified); a running node takes newer
    /// versions of `directory_file` ([`crate::directory_update`]).
    pub directory: Directory,
    pub directory_file: PathBuf,
    /// The federation operator's key that the directory's signature must verify with.
    pub operator_key: VerifyingKey,
    pub directory_poll: Duration,
    /// When the node's TLS certificate expires.
    pub certificate_not_after: time::OffsetDateTime,
    pub peer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Where Prometheus metrics are served over plain HTTP (`[metrics] listen`), if at all.
    pub metrics_addr: Option<SocketAddr>,
    /// The console (`[console]`), if the node serves one.
    pub console: Option<ConsoleSettings>,
    pub tls: TlsMaterial,
    pub signing_key: SigningKey,
    /// Seals the personal data in the store (encryption at rest).
    pub data_key: DataKey,
    /// Bytes of the store's page cache (`[storage] cache_mb`).
    pub cache_bytes: u64,
    pub api_tokens: Vec<ApiToken>,
    pub delivery: DeliverySettings,
    pub limits: ReceptionLimits,
    /// The PeerExchange port's bounds.
    pub peer_port: PortLimits,
    /// The AgencyApi port's bounds.
    pub api_port: PortLimits,
    pub retention: RetentionSettings,
}

/// Reads a secret file, refusing one that others than its owner may read.
pub fn read_secret(key: &str, path: &Path) -> Result<String, NodeError> {
    Ok(kurzdraht_client::config::read_secret(key, path)?)
}

fn read_public(key: &str, path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path)
        .map_err(|e| NodeError::config(key, format!("cannot read {}: {e}", path.display())))
}

/// What tools read from a node.toml without loading the node (no secret is read, nothing
/// is proved): `directory verify --config`, `health --config`. Paths are resolved.
#[derive(Debug, Clone)]
pub struct NodeToml {
    pub agency: String,
    pub data_dir: PathBuf,
    pub directory_file: PathBuf,
    pub operator_key: PathBuf,
    pub api_addr: SocketAddr,
    pub ca_cert: PathBuf,
}

impl NodeToml {
    pub fn read(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::config("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|e| NodeError::config("node.toml", e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Self {
            agency: file.agency,
            data_dir: base.join(file.data_dir),
            directory_file: base.join(file.directory.file),
            operator_key: base.join(file.directory.operator_key),
            api_addr: file.listen.api,
            ca_cert: base.join(file.tls.ca_cert),
        })
    }
}

impl NodeConfig {
    /// Loads and validates `path`, reading every file it names.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::config("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base)
    }

    pub fn from_toml(text: &str, base: &Path) -> Result<Self, NodeError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            NodeError::config("node.toml", format!("{}{span}", e.message()))
        })?;
        let at = |p: &Path| base.join(p);
        validate_agency_id("agency", &file.agency)
            .map_err(|e| NodeError::config("agency", e.to_string()))?;
        let operator_key =
            read_public_key("directory.operator_key", &at(&file.directory.operator_key))?;
        let directory_file = at(&file.directory.file);
        let directory = Directory::load_signed(&directory_file, &operator_key)?;
        if !(1..=3600).contains(&file.directory.poll_secs) {
            return Err(NodeError::config(
                "directory.poll_secs",
                "must lie between 1 and 3600 (seconds)",
            ));
        }
        let me = directory.get(&file.agency).ok_or_else(|| {
            NodeError::config("agency", format!("{} is not in the directory", file.agency))
        })?;
        let role = me.role;
        let signing_key = signing_key_of(&file, me, &at)?;
        let (data_dir, data_key) = storage_of(&file, &at)?;
        let (tls, identity) = tls_of(&file, &directory, &at)?;
        let api_tokens = api_tokens_of(&file.api)?;
        let d = &file.delivery;
        check_delivery(d)?;
        let l = &file.limits;
        check_limits(l, d)?;
        if file.retention.sweep_interval_secs == 0 {
            return Err(NodeError::config(
                "retention.sweep_interval_secs",
                "must be above 0",
            ));
        }
        let port = |connections: u32, streams: u32, concurrent: Option<u32>, timeout_secs: u64| {
            PortLimits {
                connections: connections as usize,
                streams_per_connection: streams,
                concurrent_requests_per_connection: concurrent.map(|c| c as usize),
                request_timeout: Duration::from_secs(timeout_secs),
                max_header_list_bytes: l.max_header_list_bytes,
                keepalive_interval: Duration::from_secs(l.keepalive_interval_secs),
                keepalive_timeout: Duration::from_secs(l.keepalive_timeout_secs),
            }
        };
        Ok(Self {
            peer_port: port(
                l.peer_connections,
                l.peer_streams_per_connection,
                None,
                l.peer_request_timeout_secs,
            ),
            api_port: port(
                l.api_connections,
                l.api_streams_per_connection,
                Some(l.api_concurrent_requests_per_connection),
                l.api_request_timeout_secs,
            ),
            retention: RetentionSettings {
                body_retention: Duration::from_secs(file.retention.body_retention_secs),
                sweep_interval: Duration::from_secs(file.retention.sweep_interval_secs),
            },
            agency: file.agency.clone(),
            role,
            data_dir,
            directory,
            directory_file,
            operator_key,
            directory_poll: Duration::from_secs(file.directory.poll_secs),
            certificate_not_after: identity.not_after,
            peer_addr: file.listen.peer,
            api_addr: file.listen.api,
            metrics_addr: file.metrics.as_ref().map(|m| m.listen),
            console: console_of(&file.console)?,
            tls,
            signing_key,
            data_key,
            cache_bytes: file.storage.cache_mb * 1024 * 1024,
            api_tokens,
            delivery: DeliverySettings {
                retry_initial: Duration::from_millis(d.retry_initial_ms),
                retry_max: Duration::from_millis(d.retry_max_ms),
                deadline: Duration::from_secs(d.deadline_secs),
                request_timeout: Duration::from_millis(d.request_timeout_ms.max(100)),
                peer_probe: (d.peer_probe_secs > 0).then(|| Duration::from_secs(d.peer_probe_secs)),
                keep_delivered: Duration::from_secs(d.keep_delivered_days * 24 * 3600),
            },
            limits: ReceptionLimits {
                envelope: Limits {
                    max_header_bytes: l.max_header_bytes,
                    max_payload_bytes: l.max_payload_bytes,
                },
                replay_window: Duration::from_secs(l.replay_window_hours * 3600),
                clock_skew: Duration::from_secs(l.clock_skew_secs),
                consent_default_validity: Duration::from_secs(
                    l.consent_default_validity_days * 24 * 3600,
                ),
                peer_requests_per_second: l.peer_requests_per_second,
                peer_concurrent_requests: l.peer_concurrent_requests,
            },
        })
    }
}

/// The signing key (`signing.key_file`): pinned for this agency in the directory, active.
fn signing_key_of(
    file: &ConfigFile,
    me: &crate::directory::Agency,
    at: &dyn Fn(&Path) -> PathBuf,
) -> Result<SigningKey, NodeError> {
    let signing_key = SigningKey::from_hex(&read_secret(
        "signing.key_file",
        &at(&file.signing.key_file),
    )?)
    .map_err(|e| NodeError::config("signing.key_file", e.to_string()))?;
    match me.state_of(&signing_key.verifying_key()) {
        Some(KeyState::Active) => {}
        None => {
            return Err(NodeError::config(
                "signing.key_file",
                format!(
                    "{}: its public key is not pinned for this agency in the directory",
                    at(&file.signing.key_file).display()
                ),
            ))
        }
        Some(state) => {
            return Err(NodeError::config(
                "signing.key_file",
                format!(
                    "{}: its public key is {state} in the directory: peers refuse what it signs; sign with an active key",
                    at(&file.signing.key_file).display()
                ),
            ))
        }
    }
    Ok(signing_key)
}

/// The store's directory and its data key (`[storage]`; the key outside the store).
fn storage_of(
    file: &ConfigFile,
    at: &dyn Fn(&Path) -> PathBuf,
) -> Result<(PathBuf, DataKey), NodeError> {
    let data_dir = at(&file.data_dir);
    let key_path = at(&file.storage.data_key_file);
    if key_path.starts_with(&data_dir) {
        return Err(NodeError::config(
            "storage.data_key_file",
            "must lie outside data_dir, so that a copy of the store alone reveals nothing",
        ));
    }
    let data_key = DataKey::from_hex(&read_secret("storage.data_key_file", &key_path)?)
        .map_err(|e| NodeError::config("storage.data_key_file", e.to_string()))?;
    if !(4..=65_536).contains(&file.storage.cache_mb) {
        return Err(NodeError::config(
            "storage.cache_mb",
            "must lie between 4 and 65536 (MiB)",
        ));
    }
    Ok((data_dir, data_key))
}

/// The TLS material (`[tls]`) and the identity it proves for this agency; a refusal names
/// the file at fault as well as its key in node.toml.
fn tls_of(
    file: &ConfigFile,
    directory: &Directory,
    at: &dyn Fn(&Path) -> PathBuf,
) -> Result<(TlsMaterial, crate::tls::ProvenIdentity), NodeError> {
    let tls = TlsMaterial {
        ca_pem: read_public("tls.ca_cert", &at(&file.tls.ca_cert))?,
        cert_pem: read_public("tls.cert", &at(&file.tls.cert))?,
        key_pem: read_secret("tls.key", &at(&file.tls.key))?,
    };
    // The refusal names the file at fault as well as its key in node.toml.
    let identity =
        crate::tls::check_identity(&tls, &file.agency, directory, std::time::SystemTime::now())
            .map_err(|e| match e {
                NodeError::Config { key, reason } => {
                    let path = match key.as_str() {
                        "tls.cert" => at(&file.tls.cert),
                        "tls.key" => at(&file.tls.key),
                        _ => at(&file.tls.ca_cert),
                    };
                    NodeError::Config {
                        reason: format!("{}: {reason}", path.display()),
                        key,
                    }
                }
                other => other,
            })?;
    Ok((tls, identity))
}

/// The IT systems' tokens (`[api] tokens`): at least one, each a SHA-256 hash and a name.
fn api_tokens_of(api: &ApiFile) -> Result<Vec<ApiToken>, NodeError> {
    if api.tokens.is_empty() {
        return Err(NodeError::config("api.tokens", "lists no IT system"));
    }
    let api_tokens = api
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let bytes = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    NodeError::config(format!("api.tokens[{i}].sha256"), "must be 64 hex digits")
                })?;
            if t.client.trim().is_empty() {
                return Err(NodeError::config(
                    format!("api.tokens[{i}].client"),
                    "is empty",
                ));
            }
            Ok(ApiToken {
                client: t.client.clone(),
                sha256: bytes,
                admin: t.admin,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(api_tokens)
}

/// The bounds of `[delivery]`.
fn check_delivery(d: &DeliveryFile) -> Result<(), NodeError> {
    if d.retry_initial_ms == 0 || d.retry_max_ms < d.retry_initial_ms {
        return Err(NodeError::config(
            "delivery.retry_max_ms",
            "must be at least delivery.retry_initial_ms, which must be above 0",
        ));
    }
    if d.deadline_secs == 0 {
        return Err(NodeError::config(
            "delivery.deadline_secs",
            "must be above 0",
        ));
    }
    if !(1..=366).contains(&d.keep_delivered_days) {
        return Err(NodeError::config(
            "delivery.keep_delivered_days",
            "must lie between 1 and 366 (days)",
        ));
    }
    Ok(())
}

/// The bounds of `[limits]` (the replay window against `[delivery]`'s deadline).
fn check_limits(l: &LimitsFile, d: &DeliveryFile) -> Result<(), NodeError> {
    if l.replay_window_hours * 3600 <= d.deadline_secs {
        return Err(NodeError::config(
            "limits.replay_window_hours",
            "must exceed delivery.deadline_secs, or retried messages would be refused as replays",
        ));
    }
    if l.max_header_bytes < 256 || l.max_payload_bytes < 1024 {
        return Err(NodeError::config(
            "limits",
            "max_header_bytes must be at least 256 and max_payload_bytes at least 1024",
        ));
    }
    if l.peer_requests_per_second == 0 || l.peer_concurrent_requests == 0 {
        return Err(NodeError::config(
            "limits.peer_requests_per_second",
            "peer_requests_per_second and peer_concurrent_requests must be above 0",
        ));
    }
    for (key, value) in [
        ("limits.peer_connections", l.peer_connections),
        (
            "limits.peer_streams_per_connection",
            l.peer_streams_per_connection,
        ),
        ("limits.api_connections", l.api_connections),
        (
            "limits.api_streams_per_connection",
            l.api_streams_per_connection,
        ),
        (
            "limits.api_concurrent_requests_per_connection",
            l.api_concurrent_requests_per_connection,
        ),
    ] {
        if !(1..=65_536).contains(&value) {
            return Err(NodeError::config(key, "must lie between 1 and 65536"));
        }
    }
    if l.api_concurrent_requests_per_connection > l.api_streams_per_connection {
        return Err(NodeError::config(
            "limits.api_concurrent_requests_per_connection",
            "must not exceed limits.api_streams_per_connection",
        ));
    }
    if !(1024..=1024 * 1024).contains(&l.max_header_list_bytes) {
        return Err(NodeError::config(
            "limits.max_header_list_bytes",
            "must lie between 1024 and 1048576",
        ));
    }
    for (key, secs) in [
        (
            "limits.peer_request_timeout_secs",
            l.peer_request_timeout_secs,
        ),
        (
            "limits.api_request_timeout_secs",
            l.api_request_timeout_secs,
        ),
        ("limits.keepalive_interval_secs", l.keepalive_interval_secs),
        ("limits.keepalive_timeout_secs", l.keepalive_timeout_secs),
    ] {
        if !(1..=86_400).contains(&secs) {
            return Err(NodeError::config(
                key,
                "must lie between 1 and 86400 (seconds)",
            ));
        }
    }
    if l.consent_default_validity_days == 0 {
        return Err(NodeError::config(
            "limits.consent_default_validity_days",
            "must be above 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three Segeberg agencies on fixed loopback ports: these tests load configurations
    /// and bind nothing.
    fn test_agencies() -> Vec<crate::pki::AgencySpec> {
        let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        crate::pki::segeberg([(at(1), at(2)), (at(3), at(4)), (at(5), at(6))])
    }

    /// A node.toml made by `pki init` (in a directory of its own), with `extra` lines at
    /// the top of `[limits]`, loaded.
    fn load_with(extra: &str) -> Result<NodeConfig, NodeError> {
        let dir = tempfile::tempdir()?;
        let files = crate::pki::init(dir.path(), &test_agencies())?;
        let path = &files[0].node_config;
        let text =
            std::fs::read_to_string(path)?.replace("[limits]\n", &format!("[limits]\n{extra}"));
        NodeConfig::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    #[test]
    fn the_keep_window_of_delivered_envelopes_defaults_to_30_days_and_is_bounded() {
        let day = Duration::from_secs(24 * 3600);
        let c = load_with("").expect("defaults");
        assert_eq!(c.delivery.keep_delivered, 30 * day);
        let with = |line: &str| -> Result<NodeConfig, NodeError> {
            let dir = tempfile::tempdir()?;
            let files = crate::pki::init(dir.path(), &test_agencies())?;
            let path = &files[0].node_config;
            let text = std::fs::read_to_string(path)?
                .replace("[delivery]\n", &format!("[delivery]\n{line}\n"));
            NodeConfig::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
        };
        assert_eq!(
            with("keep_delivered_days = 7")
                .expect("7 days")
                .delivery
                .keep_delivered,
            7 * day
        );
        for bad in ["keep_delivered_days = 0", "keep_delivered_days = 367"] {
            match with(bad) {
                Err(NodeError::Config { key, .. }) => {
                    assert_eq!(key, "delivery.keep_delivered_days", "{bad}")
                }
                other => panic!("{bad}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_bounds_of_both_ports_load_with_their_defaults_and_as_configured() {
        let c = load_with("").expect("defaults");
        assert_eq!(c.peer_port.connections, 64);
        assert_eq!(c.peer_port.streams_per_connection, 64);
        assert_eq!(c.peer_port.concurrent_requests_per_connection, None);
        assert_eq!(c.peer_port.request_timeout, Duration::from_secs(60));
        assert_eq!(c.api_port.concurrent_requests_per_connection, Some(64));
        assert_eq!(c.api_port.request_timeout, Duration::from_secs(600));
        assert_eq!(c.api_port.max_header_list_bytes, 8192);
        assert_eq!(c.api_port.keepalive_timeout, Duration::from_secs(10));
        let c = load_with(
            "api_streams_per_connection = 8\napi_concurrent_requests_per_connection = 8\n\
             keepalive_interval_secs = 5\n",
        )
        .expect("configured");
        assert_eq!(c.api_port.streams_per_connection, 8);
        assert_eq!(c.peer_port.keepalive_interval, Duration::from_secs(5));
    }

    #[test]
    fn a_bound_out_of_its_range_is_refused_naming_its_key() {
        for (line, key) in [
            ("peer_connections = 0", "limits.peer_connections"),
            (
                "api_streams_per_connection = 70000",
                "limits.api_streams_per_connection",
            ),
            (
                "api_concurrent_requests_per_connection = 200",
                "limits.api_concurrent_requests_per_connection",
            ),
            (
                "max_header_list_bytes = 100",
                "limits.max_header_list_bytes",
            ),
            (
                "peer_request_timeout_secs = 0",
                "limits.peer_request_timeout_secs",
            ),
            (
                "keepalive_timeout_secs = 0",
                "limits.keepalive_timeout_secs",
            ),
        ] {
            match load_with(&format!("{line}\n")) {
                Err(NodeError::Config { key: k, reason }) => {
                    assert_eq!(k, key, "{line}: {reason}")
                }
                other => panic!("{line}: expected a refusal naming {key}, got {other:?}"),
            }
        }
    }

    /// A federation of `pki init` in `dir`; the Jobcenter's node.toml.
    fn federation(dir: &Path) -> PathBuf {
        let files = crate::pki::init(dir, &test_agencies()).expect("init");
        files[0].node_config.clone()
    }

    fn refusal(path: &Path) -> (String, String) {
        match NodeConfig::load(path) {
            Err(NodeError::Config { key, reason }) => (key, reason),
            other => panic!("expected a configuration refusal, got {other:?}"),
        }
    }

    fn copy_over(from: &Path, to: &Path) {
        std::fs::remove_file(to).expect("remove");
        std::fs::copy(from, to).expect("copy");
    }

    #[test]
    fn another_agencys_certificate_or_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let node_toml = federation(dir.path());
        let jc = dir.path().join("jobcenter-segeberg");
        let ja = dir.path().join("jugendamt-kreis-segeberg");
        NodeConfig::load(&node_toml).expect("the node's own files pass");
        // another agency's certificate and key
        copy_over(&ja.join("tls.pem"), &jc.join("tls.pem"));
        copy_over(&ja.join("tls.key"), &jc.join("tls.key"));
        let (key, reason) = refusal(&node_toml);
        assert_eq!(key, "tls.cert");
        assert!(
            reason.contains(
                "names [jugendamt-kreis-segeberg], not this node's agency jobcenter-segeberg"
            ),
            "{reason}"
        );
        // its own certificate, another agency's key
        let own = tempfile::tempdir().expect("tmp");
        federation(own.path());
        let dir2 = tempfile::tempdir().expect("tmp");
        let node_toml = federation(dir2.path());
        let jc = dir2.path().join("jobcenter-segeberg");
        copy_over(
            &dir2.path().join("jugendamt-kreis-segeberg").join("tls.key"),
            &jc.join("tls.key"),
        );
        let (key, reason) = refusal(&node_toml);
        assert_eq!(key, "tls.key", "{reason}");
        // a certificate of another federation's CA naming this agency
        copy_over(
            &own.path().join("jobcenter-segeberg").join("tls.pem"),
            &jc.join("tls.pem"),
        );
        copy_over(
            &own.path().join("jobcenter-segeberg").join("tls.key"),
            &jc.join("tls.key"),
        );
        let (key, reason) = refusal(&node_toml);
        assert_eq!(key, "tls.cert");
        assert!(
            reason.contains("not issued by the federation CA"),
            "{reason}"
        );
    }

    #[test]
    fn a_retired_signing_key_or_a_changed_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let node_toml = federation(dir.path());
        let directory = dir.path().join("directory.toml");
        let text = std::fs::read_to_string(&directory).expect("read");
        let public = SigningKey::from_hex(
            &std::fs::read_to_string(dir.path().join("jobcenter-segeberg/signing.key"))
                .expect("read"),
        )
        .expect("key")
        .verifying_key()
        .to_hex();
        let retired = text.replace(
            &format!("{{ key = \"{public}\", state = \"active\" }}"),
            &format!("{{ key = \"{public}\", state = \"retired\", since = \"2026-01-01\" }}"),
        );
        assert_ne!(retired, text);
        // changed after signing: the signature refuses it
        crate::pki::replace_file(&directory, &retired).expect("write");
        let (key, reason) = refusal(&node_toml);
        assert_eq!(key, "directory.signature");
        assert!(reason.contains("changed after it was signed"), "{reason}");
        // signed by the operator: the retired key is refused
        let operator = std::fs::read_to_string(dir.path().join("operator.key")).expect("read");
        crate::pki::sign_directory_file(&directory, &operator).expect("sign");
        let (key, reason) = refusal(&node_toml);
        assert_eq!(key, "signing.key_file");
        assert!(reason.contains("retired since 2026-01-01"), "{reason}");
    }
}
