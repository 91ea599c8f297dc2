//! `kurzdraht audit verify`: the audit chain of a stopped node, verified without writing to
//! its store. Opening a sled store writes to it (recovery, a new snapshot), so the check
//! takes the store's lock — refusing while a node holds it — copies the store into a
//! private scratch directory (mode 0700, removed afterwards), releases the lock and verifies
//! the copy. The store checked, a backup included, is left exactly as it was. It needs free
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

fn copy_tree(from: &Path, to: &Path) -> Result<(), NodeError> {
    let failed = |what: &Path, e: std::io::Error| {
        NodeError::config("data_dir", format!("cannot copy {}: {e}", what.display()))
    };
    for entry in std::fs::read_dir(from).map_err(|e| failed(from, e))? {
        let entry = entry.map_err(|e| failed(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| failed(&path, e))?;
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| failed(&path, e))?;
            copy_tree(&path, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&path, &target).map_err(|e| failed(&path, e))?;
        }
    }
    Ok(())
}

/// Verifies the audit chain of the store in `data_dir` on a copy made in `scratch`; the
/// store itself is only read. Refused while a node holds the store.
pub fn verify_read_only(data_dir: &Path, scratch: &Path) -> Result<AuditReport, NodeError> {
    let db = data_dir.join("db");
    let lock = std::fs::File::open(&db).map_err(|e| {
        NodeError::config(
            "data_dir",
            format!(
                "{} holds no store ({}: {e})",
                data_dir.display(),
                db.display()
            ),
        )
    })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LedgerError::Locked {
                path: data_dir.to_path_buf(),
            }
            .into())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(NodeError::config(
                "data_dir",
                format!("cannot lock {}: {e}", db.display()),
            ))
        }
    }
    let copy = scratch_in(scratch)?;
    copy_tree(data_dir, &copy.0)?;
    drop(lock);
    let ledger = Ledger::open(&copy.0)?;
    let report = ledger.verify_audit()?;
    drop(ledger);
    Ok(report)
}
