//! `node.toml` as written: its sections and keys, with their defaults. What they mean,
//! and their bounds, is checked when the configuration is loaded (the parent module).

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) agency: String,
    pub(super) data_dir: PathBuf,
    pub(super) directory: DirectoryFileSection,
    pub(super) listen: ListenFile,
    pub(super) tls: TlsFile,
    pub(super) signing: SigningFile,
    pub(super) storage: StorageFile,
    pub(super) api: ApiFile,
    #[serde(default)]
    pub(super) delivery: DeliveryFile,
    #[serde(default)]
    pub(super) limits: LimitsFile,
    #[serde(default)]
    pub(super) retention: RetentionFile,
    /// Optional: without it the node serves no metrics.
    #[serde(default)]
    pub(super) metrics: Option<MetricsFile>,
    /// Optional: without it the node serves no console.
    #[serde(default)]
    pub(super) console: Option<ConsoleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsoleFile {
    /// HTTPS with the node's certificate.
    pub(super) listen: SocketAddr,
    /// A session not used for this long ends (60 to 28,800; default 900).
    #[serde(default = "default_console_idle_timeout_secs")]
    pub(super) idle_timeout_secs: u64,
    /// The most sessions held at once (1 to 100,000; default 1,000).
    #[serde(default = "default_console_max_sessions")]
    pub(super) max_sessions: usize,
}

pub(super) fn default_console_idle_timeout_secs() -> u64 {
    900
}

pub(super) fn default_console_max_sessions() -> usize {
    1000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirectoryFileSection {
    /// The directory file; its signature lies beside it (`<file>.sig`).
    pub(super) file: PathBuf,
    /// The federation operator's public key (a file of 64 hex digits).
    pub(super) operator_key: PathBuf,
    /// How often the node looks for a new version of the directory (also on SIGHUP).
    #[serde(default = "default_directory_poll_secs")]
    pub(super) poll_secs: u64,
}

pub(super) fn default_directory_poll_secs() -> u64 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    /// Plain HTTP (no TLS, no token): bind to loopback or a monitoring network only.
    pub(super) listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RetentionFile {
    /// How long after a case is closed its message bodies are kept (default 365 days).
    pub(super) body_retention_secs: u64,
    /// How often the node looks for bodies due for deletion.
    pub(super) sweep_interval_secs: u64,
}

impl Default for RetentionFile {
    fn default() -> Self {
        Self {
            body_retention_secs: 365 * 24 * 3600,
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenFile {
    pub(super) peer: SocketAddr,
    pub(super) api: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) ca_cert: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SigningFile {
    pub(super) key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StorageFile {
    /// The key that seals personal data in the store; must lie outside `data_dir`.
    pub(super) data_key_file: PathBuf,
    /// MiB of the store's page cache (the bulk of the node's memory).
    #[serde(default = "default_cache_mb")]
    pub(super) cache_mb: u64,
}

pub(super) fn default_cache_mb() -> u64 {
    kurzdraht_ledger::DEFAULT_CACHE_BYTES / (1024 * 1024)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiFile {
    pub(super) tokens: Vec<TokenFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenFile {
    pub(super) client: String,
    pub(super) sha256: String,
    /// May call the operators' calls `Backup` and `Reconcile` (default false).
    #[serde(default)]
    pub(super) admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DeliveryFile {
    pub(super) retry_initial_ms: u64,
    pub(super) retry_max_ms: u64,
    /// How long after submission a message may still be delivered (default 7 days).
    pub(super) deadline_secs: u64,
    pub(super) request_timeout_ms: u64,
    /// How often the node checks that each peer answers (mutual TLS and health); 0: never.
    pub(super) peer_probe_secs: u64,
    /// How long a delivered message's envelope is kept, so that a peer restored from a
    /// backup can have it again (default 30 days).
    pub(super) keep_delivered_days: u64,
}

impl Default for DeliveryFile {
    fn default() -> Self {
        Self {
            retry_initial_ms: 250,
            retry_max_ms: 5 * 60 * 1000,
            deadline_secs: 7 * 24 * 3600,
            request_timeout_ms: 30_000,
            peer_probe_secs: 30,
            keep_delivered_days: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LimitsFile {
    pub(super) max_header_bytes: usize,
    pub(super) max_payload_bytes: usize,
    pub(super) replay_window_hours: u64,
    pub(super) clock_skew_secs: u64,
    pub(super) consent_default_validity_days: u64,
    /// Deliveries a single peer may make per second (burst: one second's worth).
    pub(super) peer_requests_per_second: u32,
    /// Deliveries a single peer may have in flight at once (over all its connections);
    /// counted before a request's body is read.
    pub(super) peer_concurrent_requests: u32,
    /// Connections the PeerExchange port holds open at once; more wait to be accepted.
    pub(super) peer_connections: u32,
    /// HTTP/2 streams one connection to the PeerExchange port may have open at once;
    /// the transport refuses more (REFUSED_STREAM).
    pub(super) peer_streams_per_connection: u32,
    /// How long a PeerExchange call may take, its request body included (CANCELLED after).
    pub(super) peer_request_timeout_secs: u64,
    /// Connections the AgencyApi port holds open at once; more wait to be accepted.
    pub(super) api_connections: u32,
    /// HTTP/2 streams one connection to the AgencyApi port may have open at once.
    pub(super) api_streams_per_connection: u32,
    /// AgencyApi calls one connection may have running at once; more wait, unread.
    pub(super) api_concurrent_requests_per_connection: u32,
    /// How long an AgencyApi call may take until its answer starts (CANCELLED after);
    /// streams (ReadInbox, WatchStatus) run on once they have started.
    pub(super) api_request_timeout_secs: u64,
    /// Bytes of request headers (HTTP/2 header list) either port accepts per request.
    pub(super) max_header_list_bytes: u32,
    /// Seconds between HTTP/2 pings on a connection of either port.
    pub(super) keepalive_interval_secs: u64,
    /// A connection whose ping is not answered within this many seconds is closed.
    pub(super) keepalive_timeout_secs: u64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_header_bytes: 4 * 1024,
            max_payload_bytes: 256 * 1024,
            replay_window_hours: 8 * 24,
            clock_skew_secs: 300,
            consent_default_validity_days: 365,
            peer_requests_per_second: 5_000,
            peer_concurrent_requests: 32,
            peer_connections: 64,
            peer_streams_per_connection: 64,
            peer_request_timeout_secs: 60,
            api_connections: 64,
            api_streams_per_connection: 128,
            api_concurrent_requests_per_connection: 64,
            api_request_timeout_secs: 600,
            max_header_list_bytes: 8 * 1024,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
        }
    }
}
