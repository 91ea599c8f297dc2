//! Online backup and restore of a whole store.
//!
//! [`Ledger::export`] copies every tree, key by key, while it holds every transaction back
//! (the store's write pause): the copy is one consistent state that holds everything
//! committed before the pause began — so everything acknowledged before the backup was
//! asked for. Values are copied as stored: what is sealed under the data key stays sealed,
//! so an archive reveals no more than the store (ids, times, hashes, the audit chain).
//! [`restore`] writes an archive into an empty data directory, checking its SHA-256 first.
//!
//! Archive format (version 1), all lengths u32 big-endian:
//!
//! ```text
//! "KURZDRAHT-BACKUP 1\n"
//! len ‖ BackupManifest (protobuf)
//! then per tree:  0x01 ‖ len ‖ tree name
//!   per entry:    0x02 ‖ len ‖ key ‖ len ‖ value
//! 0x03 ‖ SHA-256 of every byte before it (the 0x03 included)
//! ```

use super::{u64_from, Ledger, SCHEMA, SCHEMA_VERSION, SEQ_FLOOR};
use crate::{
    audit::{AuditEvent, AuditNote},
    db,
    error::LedgerError,
    records::{BackupManifest, PendingReconciliation},
};
use prost::Message;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"KURZDRAHT-BACKUP 1\n";
const TREE: u8 = 1;
const ENTRY: u8 = 2;
const END: u8 = 3;
/// The largest key, value or name an archive may hold (the engine keeps values up to its
/// own limits; kurzdraht's largest are envelopes of a few hundred KiB).
const MAX_FIELD: usize = 64 * 1024 * 1024;
/// The largest manifest.
const MAX_MANIFEST: usize = 64 * 1024;

/// What [`Ledger::export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub trees: usize,
    pub entries: u64,
    pub bytes: u64,
    /// How long transactions were held back.
    pub pause: std::time::Duration,
}

/// Writes through to `out`, hashing and counting every byte.
struct Hashing<W> {
    out: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hash.update(data);
        self.bytes += data.len() as u64;
        self.out.write_all(data)
    }

    fn field(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len =
            u32::try_from(data.len()).map_err(|_| std::io::Error::other("a field over 4 GiB"))?;
        self.put(&len.to_be_bytes())?;
        self.put(data)
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LedgerError + 'a {
    move |source| LedgerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Ledger {
    /// Writes a consistent copy of the whole store to `out` (see the module doc), holding
    /// every transaction back while it reads the trees; `manifest.schema` is filled in.
    /// Blocking: run it on a blocking thread. Writes to `out` happen during the pause, so
    /// give it a local file, not a network stream.
    pub fn export(
        &self,
        mut manifest: BackupManifest,
        out: impl Write,
    ) -> Result<Exported, LedgerError> {
        manifest.schema = SCHEMA_VERSION;
        let mut w = Hashing {
            out,
            hash: Sha256::new(),
            bytes: 0,
        };
        let path = PathBuf::from("backup archive");
        let wr = |e| io("write", &path)(e);
        w.put(MAGIC).map_err(wr)?;
        w.field(&manifest.encode_to_vec()).map_err(wr)?;
        let paused = self.writes.write().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let mut trees = 0;
        let mut entries = 0;
        for name in self.db.tree_names()? {
            let tree = self.db.open_tree(&name)?;
            w.put(&[TREE]).map_err(wr)?;
            w.field(&name).map_err(wr)?;
            trees += 1;
            for kv in tree.iter() {
                let (k, v) = kv?;
                w.put(&[ENTRY]).map_err(wr)?;
                w.field(&k).map_err(wr)?;
                w.field(&v).map_err(wr)?;
                entries += 1;
            }
        }
        let pause = started.elapsed();
        drop(paused);
        w.put(&[END]).map_err(wr)?;
        let digest: [u8; 32] = w.hash.clone().finalize().into();
        w.out.write_all(&digest).map_err(wr)?;
        w.out.flush().map_err(wr)?;
        Ok(Exported {
            trees,
            entries,
            bytes: w.bytes + 32,
            pause,
        })
    }
}

/// Reads one archive element at a time, hashing what it reads.
struct Reader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, LedgerError> {
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| LedgerError::corrupt("backup archive", "ends early"))?;
        self.hash.update(&buf);
        Ok(buf)
    }

    fn field(&mut self, limit: usize) -> Result<Vec<u8>, LedgerError> {
        let len = self.exact(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > limit {
            return Err(LedgerError::corrupt(
                "backup archive",
                format!("a field of {len} bytes, over the limit of {limit}"),
            ));
        }
        self.exact(len)
    }
}

/// One pass over an archive: checks its form and its SHA-256, calling `each(tree, key,
/// value)` for every entry in order. Returns the manifest.
fn read_archive<R: Read>(
    input: R,
    mut each: impl FnMut(&[u8], Vec<u8>, Vec<u8>) -> Result<(), LedgerError>,
) -> Result<BackupManifest, LedgerError> {
    let mut r = Reader {
        inner: input,
        hash: Sha256::new(),
    };
    if r.exact(MAGIC.len())? != MAGIC {
        return Err(LedgerError::corrupt(
            "backup archive",
            "not a kurzdraht backup (version 1)",
        ));
    }
    let manifest = BackupManifest::decode(r.field(MAX_MANIFEST)?.as_slice())
        .map_err(|e| LedgerError::corrupt("backup manifest", e))?;
    let mut tree: Option<Vec<u8>> = None;
    loop {
        match r.exact(1)?[0] {
            TREE => tree = Some(r.field(MAX_FIELD)?),
            ENTRY => {
                let key = r.field(MAX_FIELD)?;
                let value = r.field(MAX_FIELD)?;
                let name = tree.as_deref().ok_or_else(|| {
                    LedgerError::corrupt("backup archive", "an entry before any tree")
                })?;
                each(name, key, value)?;
            }
            END => break,
            other => {
                return Err(LedgerError::corrupt(
                    "backup archive",
                    format!("unknown element {other}"),
                ))
            }
        }
    }
    let expected: [u8; 32] = r.hash.finalize().into();
    let mut stated = [0u8; 32];
    r.inner
        .read_exact(&mut stated)
        .map_err(|_| LedgerError::corrupt("backup archive", "ends before its checksum"))?;
    if stated != expected {
        return Err(LedgerError::corrupt(
            "backup archive",
            "its SHA-256 does not match (damaged or incomplete)",
        ));
    }
    let mut rest = [0u8; 1];
    if r.inner
        .read(&mut rest)
        .map_err(io("read", Path::new("backup archive")))?
        != 0
    {
        return Err(LedgerError::corrupt(
            "backup archive",
            "bytes after its checksum",
        ));
    }
    Ok(manifest)
}

/// Checks an archive whole (form and SHA-256) without writing anything; returns its
/// manifest.
pub fn check(archive: &Path) -> Result<BackupManifest, LedgerError> {
    let file = std::fs::File::open(archive).map_err(io("open", archive))?;
    read_archive(std::io::BufReader::new(file), |_, _, _| Ok(()))
}

/// Restores `archive` into `dir`, which must be empty or absent: the archive is checked
/// whole first (nothing is written from a damaged one), then its trees are written into a
/// new store there and flushed. Sequence numbers of the restored store begin above every
/// one the archive holds (`meta/seq_floor`). Returns the manifest. The store is not opened
/// with its data key here: the caller does that (which also checks that the key fits).
pub fn restore(archive: &Path, dir: &Path) -> Result<BackupManifest, LedgerError> {
    let manifest = check(archive)?;
    if manifest.schema > SCHEMA_VERSION {
        return Err(LedgerError::NewerStore {
            version: manifest.schema,
            supported: SCHEMA_VERSION,
        });
    }
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(LedgerError::Io {
                what: "restore into",
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the data directory is not empty; move the current store aside first",
                ),
            });
        }
    }
    let db = db::open(dir, None)?;
    let file = std::fs::File::open(archive).map_err(io("open", archive))?;
    let mut open: Option<(Vec<u8>, db::Tree, db::Batch, usize)> = None;
    let mut max_seq = 0u64;
    read_archive(std::io::BufReader::new(file), |name, key, value| {
        if open.as_ref().is_none_or(|(n, ..)| n.as_slice() != name) {
            if let Some((_, tree, batch, _)) = open.take() {
                tree.apply_batch(batch)?;
            }
            open = Some((name.to_vec(), db.open_tree(name)?, db::Batch::default(), 0));
        }
        if name == b"outbox" && key.len() >= 8 {
            max_seq = max_seq.max(u64_from("outbox key", &key[key.len() - 8..])?);
        }
        if name == b"meta" && key == SEQ_FLOOR {
            max_seq = max_seq.max(u64_from("seq floor", &value)?);
        }
        if name == b"delivered" && key.first() == Some(&b't') && key.len() == 17 {
            max_seq = max_seq.max(u64_from("kept delivery key", &key[9..])?);
        }
        if let Some((_, tree, batch, pending)) = open.as_mut() {
            batch.insert(key, value);
            *pending += 1;
            if *pending >= 10_000 {
                tree.apply_batch(std::mem::take(batch))?;
                *pending = 0;
            }
        }
        Ok(())
    })?;
    if let Some((_, tree, batch, _)) = open.take() {
        tree.apply_batch(batch)?;
    }
    let meta = db.open_tree("meta")?;
    meta.insert(SEQ_FLOOR, max_seq.saturating_add(1).to_be_bytes())?;
    if meta.get(SCHEMA)?.is_none() {
        meta.insert(SCHEMA, manifest.schema.to_be_bytes())?;
    }
    db.flush()?;
    Ok(manifest)
}

/// Moves the store in `dir` aside, to `<dir>.before-restore-<now, unix seconds>`, so a
/// backup can be restored into `dir`; nothing is deleted. Refuses while a process holds
/// the store open (the engine's lock: a running node), naming the directory.
/// Returns where the store went, or `None` when `dir` is absent or empty.
pub fn move_aside(dir: &Path, now_ms: i64) -> Result<Option<PathBuf>, LedgerError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", dir)(e)),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(None);
            }
        }
    }
    if db::held_open(dir)? {
        return Err(LedgerError::Locked {
            path: dir.to_path_buf(),
        });
    }
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".before-restore-{}", now_ms.max(0) / 1000));
    let aside = PathBuf::from(aside);
    if aside.exists() {
        return Err(LedgerError::Io {
            what: "move aside to",
            path: aside,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists already; try again in a second",
            ),
        });
    }
    std::fs::rename(dir, &aside).map_err(io("move aside", dir))?;
    Ok(Some(aside))
}

/// `meta` key of a restored store's [`PendingReconciliation`].
const PENDING: &[u8] = b"reconciliation_pending";

impl Ledger {
    /// Records in a store just restored from the backup `manifest` that it must reconcile
    /// with its peers from `since_ms` on (audited as `store.restored`, ids and times only).
    pub fn mark_restored(
        &self,
        manifest: &BackupManifest,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let pending = PendingReconciliation {
            since_ms,
            restored_at_ms: now_ms,
            peers_done: Vec::new(),
        };
        self.tx(|t| {
            t.meta.insert(PENDING, pending.encode_to_vec())?;
            t.append_audit(
                AuditNote::new(AuditEvent::StoreRestored).detail(format!(
                    "from a backup taken at {}; reconciling from {since_ms}",
                    manifest.taken_at_ms
                )),
                now_ms,
            )
        })
    }

    /// The reconciliation a restored store still owes, if any.
    pub fn pending_reconciliation(&self) -> Result<Option<PendingReconciliation>, LedgerError> {
        self.meta
            .get(PENDING)?
            .map(|v| super::decode("pending reconciliation", &v))
            .transpose()
    }

    /// Notes that the pending reconciliation with `peer` is done; once every one of
    /// `peers` is, the store owes none any more. Returns the peers still owed.
    pub fn note_reconciled(
        &self,
        peer: &str,
        peers: &[String],
    ) -> Result<Vec<String>, LedgerError> {
        self.tx(|t| {
            let Some(v) = t.meta.get(PENDING)? else {
                return Ok(Vec::new());
            };
            let mut pending: PendingReconciliation =
                super::tx_decode("pending reconciliation", &v)?;
            if !pending.peers_done.iter().any(|p| p == peer) {
                pending.peers_done.push(peer.to_string());
            }
            let owed: Vec<String> = peers
                .iter()
                .filter(|p| !pending.peers_done.contains(p))
                .cloned()
                .collect();
            if owed.is_empty() {
                t.meta.remove(PENDING)?;
            } else {
                t.meta.insert(PENDING, pending.encode_to_vec())?;
            }
            Ok(owed)
        })
    }
}
