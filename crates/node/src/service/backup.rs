//! Online backup (`Backup`, AgencyApi, an admin token): a consistent copy of the whole
//! store while the node runs.
//!
//! The ledger copies every tree into a file in `data_dir` (`.backup-<id>.partial`, mode
//! 0600) while it holds every transaction back — the only pause, as long as reading the
//! trees takes (the log says how long) — and the file is then streamed to the caller in
//! chunks and deleted. One backup at a time; a file left by a node that stopped during a
//! backup is deleted at the next start. The archive's format and the restore are the
//! ledger's (`kurzdraht_ledger::backup`); `kurzdraht backup` writes it mode 0600.

use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_ledger::{AuditEvent, AuditNote, BackupManifest};
use kurzdraht_proto::v1::BackupChunk;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The most bytes of one streamed chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The name of a backup in progress in `data_dir` begins with this.
const PARTIAL_PREFIX: &str = ".backup-";

/// Deletes backup files a node that stopped during a backup left in `data_dir`.
pub(crate) fn remove_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PARTIAL_PREFIX) && name.ends_with(".partial") {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot delete a left-over backup file");
            }
        }
    }
}

/// Creates `path` for writing, readable by the owner only, refusing one that exists.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The temporary file; deleted when dropped.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Online backups of the store, one at a time.
#[derive(Clone)]
pub struct Backup {
    shared: Shared,
}

impl Backup {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Takes a backup for the IT system `client` (audited as `store.backup`, before the
    /// copy, so the archive holds its own entry) and returns the stream of its chunks.
    pub async fn take(
        &self,
        client: &str,
    ) -> Result<mpsc::Receiver<Result<BackupChunk, NodeError>>, NodeError> {
        let running = self.shared.backup_slot().try_lock_owned().map_err(|_| {
            NodeError::ResourceExhausted(
                "a backup is being taken; try again when it is done".into(),
            )
        })?;
        let now = self.shared.now_ms();
        self.shared.ledger().audit(
            AuditNote::new(AuditEvent::StoreBackup).detail(format!("client {client}")),
            now,
        )?;
        self.shared.ledger().flush().await?;
        let id = kurzdraht_envelope::ids::new_id();
        let partial = Partial(
            self.shared
                .data_dir()
                .join(format!("{PARTIAL_PREFIX}{id}.partial")),
        );
        let manifest = BackupManifest {
            agency: self.shared.agency().to_string(),
            taken_at_ms: now,
            schema: 0,
        };
        let ledger = self.shared.ledger().clone();
        let path = partial.0.clone();
        let exported = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
            let file = create_private(&path)?;
            let exported = ledger.export(manifest, std::io::BufWriter::new(file))?;
            Ok(exported)
        })
        .await
        .map_err(|e| NodeError::Task(format!("the backup export: {e}")))??;
        tracing::info!(
            client,
            trees = exported.trees,
            entries = exported.entries,
            bytes = exported.bytes,
            pause_ms = exported.pause.as_millis() as u64,
            "backup taken; streaming it"
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _running = running;
            let mut file = match tokio::fs::File::open(&partial.0).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(NodeError::Io(e))).await;
                    return;
                }
            };
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let n = match read_full(&mut file, &mut data).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(NodeError::Io(e))).await;
                        return;
                    }
                };
                if n == 0 {
                    return;
                }
                data.truncate(n);
                // The caller went away or stopped reading: stop (the file goes on drop).
                match tokio::time::timeout(STALLED, tx.send(Ok(BackupChunk { data }))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(
                            "backup stream stopped: the caller read nothing for a minute"
                        );
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// A caller that reads nothing of its backup for this long loses it (and frees the slot).
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads until `buf` is full or the file ends; returns how many bytes.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
