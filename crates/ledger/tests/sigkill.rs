//! A writer killed with SIGKILL: every write whose `flush` had returned is there after
//! reopening, and the audit chain verifies.
//!
//! Dropping a store flushes and fsyncs it (sled's `Drop` impls), so a test that only drops
//! and reopens cannot lose anything. Here the writer is a child process (this test binary,
//! run again with [`CHILD`] set) that prints `acked <n>` after each flush returns and then
//! waits for the parent's "more"; the parent kills it with SIGKILL after some acks.
//!
//! A SIGKILL loses only what sled still holds in memory, not what it has written to the
//! page cache. sled writes its log buffer asynchronously when the buffer is rolled: by a
//! flush, when full, when the store is closed, by its background flusher (every 500 ms,
//! switched off in the child with [`StoreOptions::flush_every_ms`]) and at the start of
//! every transaction (`pin_log` in sled's `pagecache/mod.rs`), which writes the transactions
//! before it. So without a flush at least the latest transaction is still in memory, and
//! killing the child while it waits after its ack loses it: a flush that did nothing fails
//! [`acknowledged_writes_survive_sigkill`], and
//! [`without_a_flush_a_sigkill_loses_acknowledged_writes`] shows the check sees the loss.
//! What a SIGKILL cannot show is a missing fsync (the page cache survives it);
//! `tests/commit.rs` checks the fsyncs of blob files.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{AuditEvent, AuditNote, Ledger, StoreOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Set in the child: `flush <dir>` or `print <dir>` (prints "acked" without flushing).
const CHILD: &str = "KURZDRAHT_LEDGER_SIGKILL_CHILD";
/// Audit entries per flush.
const GROUP: u64 = 5;
/// The parent kills the child after this many acknowledgements, while it waits for "more".
const KILL_AFTER: u64 = 10;

fn test_key() -> kurzdraht_ledger::DataKey {
    kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap()
}

fn open(dir: &std::path::Path, flush_every_ms: Option<u64>) -> Ledger {
    Ledger::open_with(
        dir,
        Some(&test_key()),
        StoreOptions {
            flush_every_ms,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The child: writes audit entries `m0`, `m1`, … in groups, flushes each group (or not),
/// prints "acked <entries so far>" and waits for "more". Anything else on stdin (the parent
/// gone) ends it without closing the store.
fn child(role: &str) {
    let (mode, dir) = role.split_once(' ').unwrap();
    let flush = match mode {
        "flush" => true,
        "print" => false,
        other => panic!("unknown child mode {other}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = open(std::path::Path::new(dir), None);
        let mut n = 0u64;
        let mut go = String::new();
        loop {
            for _ in 0..GROUP {
                let note = AuditNote::new(AuditEvent::InboxRead).message(&format!("m{n}"));
                ledger.audit(note, n as i64).unwrap();
                n += 1;
            }
            if flush {
                ledger.flush().await.unwrap();
            }
            println!("acked {n}");
            go.clear();
            std::io::stdin().read_line(&mut go).unwrap();
            if go.trim() != "more" {
                // Leave without dropping the store (which would flush it).
                std::process::exit(0);
            }
        }
    });
}

/// Runs the child in `mode` on a new store, kills it after [`KILL_AFTER`] acknowledgements,
/// and returns the store and how many entries were acknowledged.
fn write_and_kill(mode: &str, test_name: &str) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{mode} {}", dir.path().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut acked = 0u64;
    let mut acks = 0u64;
    let mut more = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acks < KILL_AFTER {
        let Some(line) = lines.next() else {
            break;
        };
        // The harness prints "test <name> ... " without a newline before the first one.
        if let Some((_, n)) = line.unwrap().rsplit_once("acked ") {
            acked = n.trim().parse().unwrap();
            acks += 1;
            if acks < KILL_AFTER {
                writeln!(more, "more").unwrap();
            }
        }
    }
    // SIGKILL on Unix: no destructor, no flush of sled's buffers.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        acks,
        KILL_AFTER,
        "the child ended after {acks} acknowledgements ({:?})",
        started.elapsed()
    );
    (dir, acked)
}

/// The audit entries `m<n>` missing from the store, of the first `acked`.
fn missing_after_reopen(dir: &std::path::Path, acked: u64) -> Vec<u64> {
    let ledger = open(dir, Some(500));
    let report = ledger.verify_audit().unwrap();
    let stored: std::collections::BTreeSet<String> = ledger
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(report.entries, stored.len() as u64);
    (0..acked)
        .filter(|n| !stored.contains(&format!("m{n}")))
        .collect()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(role) = std::env::var(CHILD) {
        return child(&role);
    }
    let (dir, acked) = write_and_kill("flush", "acknowledged_writes_survive_sigkill");
    assert_eq!(acked, KILL_AFTER * GROUP);
    let missing = missing_after_reopen(dir.path(), acked);
    assert!(
        missing.is_empty(),
        "{} of {acked} acknowledged entries lost, first m{}",
        missing.len(),
        missing[0]
    );
}

/// The control: a child that acknowledges without flushing loses acknowledged entries, so
/// the check above can fail (it would, were `Ledger::flush` a no-op).
#[test]
fn without_a_flush_a_sigkill_loses_acknowledged_writes() {
    if let Ok(role) = std::env::var(CHILD) {
        return child(&role);
    }
    let (dir, acked) = write_and_kill(
        "print",
        "without_a_flush_a_sigkill_loses_acknowledged_writes",
    );
    let missing = missing_after_reopen(dir.path(), acked);
    assert!(
        !missing.is_empty(),
        "all {acked} unflushed entries survived a SIGKILL: this setup cannot see a lost write"
    );
}
