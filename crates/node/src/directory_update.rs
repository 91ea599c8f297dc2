//! A newer directory, taken while the node runs: the node looks at its directory file every
//! `[directory] poll_secs` (and at once on SIGHUP), and puts a new version in force only if
//! its signature verifies with the pinned operator key and its version is higher than the
//! one in force. An older version, or the same version with other content, is refused, as
//! is one that adds or removes an agency or changes a role (that takes a restart: delivery
//! workers are started per peer). Each outcome is logged once per file content and counted
//! (`kurzdraht_directory_updates_total{outcome}`).
//!
//! The highest version a node has run is kept in its data directory (`directory.seen`:
//! version and fingerprint), so an older directory is refused at start too — also one put
//! back while the node was stopped.

use crate::{directory::Directory, node::Node, NodeError};
use kurzdraht_envelope::VerifyingKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The file in `data_dir` that holds the highest directory version the node has run.
pub const SEEN_FILE: &str = "directory.seen";

/// The highest directory version a node with this data directory has run, and its
/// fingerprint (`None` for a new node).
pub fn seen(data_dir: &Path) -> Result<Option<(u64, String)>, NodeError> {
    let path = data_dir.join(SEEN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(NodeError::config(
                "data_dir",
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let mut parts = text.split_whitespace();
    match (parts.next().map(str::parse::<u64>), parts.next()) {
        (Some(Ok(version)), Some(fingerprint)) => Ok(Some((version, fingerprint.to_string()))),
        _ => Err(NodeError::config(
            "data_dir",
            format!("{} is not \"<version> <fingerprint>\"", path.display()),
        )),
    }
}

/// Refuses `directory` if this data directory has run a newer version, or this version with
/// other content.
pub fn check_not_older(data_dir: &Path, directory: &Directory) -> Result<(), NodeError> {
    match seen(data_dir)? {
        Some((version, _)) if version > directory.version() => Err(NodeError::config(
            "directory.file",
            format!(
                "is version {}, older than version {version} this node has run: an older directory is refused",
                directory.version()
            ),
        )),
        Some((version, fingerprint))
            if version == directory.version() && fingerprint != directory.fingerprint() =>
        {
            Err(NodeError::config(
                "directory.file",
                format!(
                    "is version {version} with fingerprint {}, but this node ran version {version} with fingerprint {fingerprint}: a changed directory needs a new version",
                    directory.fingerprint()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Records `directory` as the highest version this data directory has run (written beside
/// and renamed, so a crash leaves the old record or the new).
pub fn record(data_dir: &Path, directory: &Directory) -> Result<(), NodeError> {
    let path = data_dir.join(SEEN_FILE);
    let tmp = data_dir.join(format!("{SEEN_FILE}.new"));
    let io = |e: std::io::Error| {
        NodeError::config("data_dir", format!("cannot write {}: {e}", path.display()))
    };
    std::fs::write(
        &tmp,
        format!("{} {}\n", directory.version(), directory.fingerprint()),
    )
    .map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

/// What became of a directory file the node looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The content in force already (or the same as last time): nothing to do.
    Unchanged,
    /// A newer version, now in force.
    Taken { version: u64, fingerprint: String },
    /// Refused; the reason.
    Refused(String),
}

/// Where a running node's directory comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    pub operator_key: VerifyingKey,
    pub data_dir: PathBuf,
}

/// Looks at the directory file once: takes a newer version, refuses anything else that
/// differs from the version in force.
pub fn look(node: &Node, source: &Source) -> Outcome {
    let current = node.directory();
    let read = std::fs::read(&source.file).and_then(|bytes| {
        let sig = std::fs::read_to_string(crate::directory::signature_path(&source.file))?;
        Ok((bytes, sig))
    });
    let (bytes, sig) = match read {
        Ok(r) => r,
        Err(e) => return Outcome::Refused(format!("cannot read it or its signature: {e}")),
    };
    if hex::encode(kurzdraht_envelope::directory_fingerprint(&bytes)) == current.fingerprint() {
        return Outcome::Unchanged;
    }
    let newer = match Directory::verified(&bytes, &sig, &source.operator_key) {
        Ok(d) => d,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    if newer.version() <= current.version() {
        return Outcome::Refused(format!(
            "version {} is not newer than version {} in force: an older directory, or a changed one without a new version, is refused",
            newer.version(),
            current.version()
        ));
    }
    if let Some(why) = current.restart_needed_for(&newer) {
        return Outcome::Refused(format!(
            "version {} needs a restart to take: {why}",
            newer.version()
        ));
    }
    if let Err(e) = record(&source.data_dir, &newer) {
        return Outcome::Refused(e.to_string());
    }
    let (version, fingerprint) = (newer.version(), newer.fingerprint());
    if let Some(me) = newer.get(node.agency()) {
        match me.state_of(&node.key().verifying_key()) {
            Some(crate::directory::KeyState::Active) => {}
            state => tracing::error!(
                agency = node.agency(),
                version,
                key_state = %state.map_or_else(|| "not listed".to_string(), |s| s.to_string()),
                "this node's signing key is no longer active in the directory: peers refuse what it sends; switch [signing] key_file to an active key and restart"
            ),
        }
    }
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    if let Ok(own) = CertificateDer::from_pem_slice(node.tls().cert_pem.as_bytes()) {
        if let Err(e) = crate::tls::check_not_revoked(&own, node.agency(), &newer, "own") {
            tracing::error!(
                agency = node.agency(),
                version,
                fingerprint = %crate::directory::certificate_fingerprint(&own),
                reason = %e,
                "this node's TLS certificate is revoked in the directory: peers refuse it; install a renewed certificate and restart"
            );
        }
    }
    node.set_directory(Arc::new(newer));
    Outcome::Taken {
        version,
        fingerprint,
    }
}

/// Watches the directory file until the node closes: every `every`, and on SIGHUP.
pub(crate) fn spawn_watcher(
    node: &Node,
    source: Source,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    let mut closing = node.closing();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        // The last content refused, so that a refusal is logged once, not every poll.
        let mut last_refused: Option<String> = None;
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = hup => {
                    tracing::info!(agency = node.agency(), "SIGHUP: looking at the directory");
                }
                _ = closing.wait_for(|c| *c) => break,
            }
            let node2 = node.clone();
            let source2 = source.clone();
            let outcome = match tokio::task::spawn_blocking(move || look(&node2, &source2)).await {
                Ok(o) => o,
                Err(e) => Outcome::Refused(format!("the look failed: {e}")),
            };
            match outcome {
                Outcome::Unchanged => last_refused = None,
                Outcome::Taken {
                    version,
                    fingerprint,
                } => {
                    last_refused = None;
                    node.metrics().directory_update(true);
                    tracing::info!(
                        agency = node.agency(),
                        version,
                        fingerprint = %fingerprint,
                        "directory taken: a newer version is in force"
                    );
                }
                Outcome::Refused(why) => {
                    if last_refused.as_deref() != Some(why.as_str()) {
                        node.metrics().directory_update(false);
                        let current = node.directory();
                        tracing::warn!(
                            agency = node.agency(),
                            file = %source.file.display(),
                            in_force = current.version(),
                            reason = %why,
                            "directory refused; the version in force stays"
                        );
                        last_refused = Some(why);
                    }
                }
            }
        }
    })
}
