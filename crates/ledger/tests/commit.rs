//! Group commit: concurrent writers share fsyncs, and every write acknowledged by `flush`
//! is there after reopening. These reopen after dropping the store, which flushes it anyway;
//! `tests/sigkill.rs` kills a writing process instead.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{Durability, Ledger, Outgoing};
use kurzdraht_proto::v1::{MessageKind, SignedEnvelope};

/// The data key every test store is sealed with.
fn test_key() -> kurzdraht_ledger::DataKey {
    kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap()
}

fn open_keyed(dir: impl AsRef<std::path::Path>) -> Result<Ledger, kurzdraht_ledger::LedgerError> {
    Ledger::open_encrypted(dir.as_ref(), &test_key())
}

fn outgoing(id: String) -> Outgoing {
    Outgoing {
        envelope: SignedEnvelope::default(),
        message_id: id,
        kind: MessageKind::CertificationRequest,
        recipient: "jugendamt-kreis-segeberg".into(),
        consent_id: "c".into(),
        submitted_at_ms: 1,
        deadline_ms: 10,
        envelope_sha256: [0; 32],
    }
}

async fn concurrent_submissions(mode: Durability, n: usize) -> (u64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(
        dir.path(),
        Some(&test_key()),
        kurzdraht_ledger::StoreOptions {
            durability: mode,
            ..Default::default()
        },
    )
    .unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let l = ledger.clone();
            tokio::spawn(async move {
                l.enqueue(&outgoing(format!("m{i:04}"))).unwrap();
                l.flush().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (ledger.flush_count(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_flushes_and_loses_nothing() {
    let n = 200;
    let (flushes, dir) = concurrent_submissions(Durability::GroupCommit, n).await;
    assert!(flushes >= 1);
    assert!(
        flushes < n as u64,
        "{flushes} flushes for {n} concurrent writers: not shared"
    );
    let l = open_keyed(dir.path()).unwrap();
    assert_eq!(l.outbox_len("jugendamt-kreis-segeberg"), n);
    assert_eq!(l.verify_audit().unwrap().entries, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_each_flushes_once_per_writer() {
    let n = 40;
    let (flushes, dir) = concurrent_submissions(Durability::FsyncEach, n).await;
    assert_eq!(flushes, n as u64);
    let l = open_keyed(dir.path()).unwrap();
    assert_eq!(l.outbox_len("jugendamt-kreis-segeberg"), n);
}

#[tokio::test]
async fn a_lone_writer_still_gets_its_flush() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    l.enqueue(&outgoing("m1".into())).unwrap();
    l.flush().await.unwrap();
    l.flush().await.unwrap();
    assert_eq!(l.flush_count(), 2);
}

/// A flush whose caller is dropped mid-flush (a cancelled gRPC call, a peer that died) must
/// not leave the group commit waiting for ever. The flush is held on its thread (as by a slow
/// disk) until its caller has been cancelled, so the cancellation lands mid-flush every time;
/// the next flush must then run and return while the cancelled one is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_flush_does_not_wedge_later_flushes() {
    use kurzdraht_ledger::{AuditEvent, AuditNote};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_keyed(dir.path()).unwrap();
    ledger
        .audit(AuditNote::new(AuditEvent::ReceivedDuplicate), 1)
        .unwrap();
    let mut pause = ledger.pause_next_flush();
    let l = ledger.clone();
    let caller = tokio::spawn(async move { l.flush().await });
    assert!(
        tokio::time::timeout(Duration::from_secs(10), pause.reached())
            .await
            .expect("the flush never reached the pause"),
        "the pause was dropped unused"
    );
    caller.abort();
    let ended = caller.await;
    assert!(
        matches!(&ended, Err(e) if e.is_cancelled()),
        "the caller was not cancelled mid-flush: {ended:?}"
    );
    assert_eq!(
        ledger.flush_count(),
        1,
        "the cancelled flush is over and counted"
    );

    ledger
        .audit(AuditNote::new(AuditEvent::ReceivedDuplicate), 2)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), ledger.flush())
        .await
        .expect("a flush after a cancelled one hangs")
        .unwrap();
    assert_eq!(ledger.flush_count(), 2);
    pause.release();
    tokio::time::timeout(Duration::from_secs(3), ledger.flush())
        .await
        .expect("a flush after the held one was released hangs")
        .unwrap();
    assert_eq!(ledger.flush_count(), 3);
}

/// The names of the files sled keeps values in beside its log (`<dir>/blobs/<lsn>`).
fn blob_files(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// sled writes a value larger than a quarter segment (about 128 KiB) to a file of its own
/// under `blobs/` and fsyncs neither it nor the directory; the log record pointing to it is
/// made durable. A flush must fsync the blob too, or an acknowledged write could lose its
/// value to a power loss. Checks that blobs really appear, that every blob present after a
/// flush was fsynced by it, and that a flush with nothing new fsyncs nothing again.
#[tokio::test]
async fn a_flush_fsyncs_every_blob_file() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for i in 0..3u8 {
        let mut out = outgoing(format!("big{i}"));
        out.envelope.payload = vec![i; 300 * 1024];
        l.enqueue(&out).unwrap();
        l.flush().await.unwrap();
        let present = blob_files(dir.path());
        assert!(
            !present.is_empty(),
            "a 300 KiB value made no blob file: this test would test nothing"
        );
        let synced = l.synced_blobs();
        assert!(
            present.is_subset(&synced.files),
            "flush {i}: blob files {:?} were not fsynced",
            present.difference(&synced.files).collect::<Vec<_>>()
        );
        assert!(synced.file_fsyncs >= present.len() as u64);
        assert!(synced.dir_fsyncs >= 2, "blobs/ and the data directory");
    }
    let before = l.synced_blobs();
    l.flush().await.unwrap();
    assert_eq!(
        l.synced_blobs(),
        before,
        "a flush with nothing new fsynced something again"
    );
    drop(l);
    let l = open_keyed(dir.path()).unwrap();
    assert_eq!(l.outbox_len("jugendamt-kreis-segeberg"), 3);
    let head = l.outbox_head("jugendamt-kreis-segeberg").unwrap().unwrap();
    assert_eq!(head.envelope.unwrap().payload.len(), 300 * 1024);
}
