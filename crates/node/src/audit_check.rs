//! `kurzdraht audit verify`: the audit chain of a stopped node, verified without writing to
//! its store. Opening a store may write to it (recovery, a new snapshot), so the check has
//! the ledger copy the stopped store under its lock (`db::copy_stopped`, refusing while a
//! node holds it) into a private scratch directory (mode 0700, removed afterwards) and
//! verifies the copy. The store checked, a backup included, is left exactly as it was. It needs free
//! space for one copy of the store where the scratch directory lies.

use crate::NodeError;
use kurzdraht_ledger::{AuditReport, Ledger, LedgerError};
use std::path::{Path, PathBuf};

/// A private directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_in(parent: &Path) -> Result<Scratch, NodeError> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| NodeError::Internal(format!("no randomness: {e}")))?;
    let dir = parent.join(format!("kurzdraht-audit-{}", hex::encode(suffix)));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&dir).map_err(|e| {
        NodeError::config(
            "--scratch",
            format!(
                "cannot create a scratch directory in {}: {e}",
                parent.display()
            ),
        )
    })?;
    Ok(Scratch(dir))
}

/// Verifies the audit chain of the store in `data_dir` on a copy made in `scratch`; the
/// store itself is only read. Refused while a node holds the store.
pub fn verify_read_only(data_dir: &Path, scratch: &Path) -> Result<AuditReport, NodeError> {
    let copy = scratch_in(scratch)?;
    kurzdraht_ledger::db::copy_stopped(data_dir, &copy.0).map_err(|e| match e {
        // no store there, or it cannot be read: the configuration names the wrong place
        LedgerError::Io { .. } => NodeError::config("data_dir", e.to_string()),
        e => NodeError::from(e),
    })?;
    let ledger = Ledger::open(&copy.0)?;
    let report = ledger.verify_audit()?;
    drop(ledger);
    Ok(report)
}
