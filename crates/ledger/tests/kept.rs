//! What a node keeps of what it delivered (for peers restored from a backup), and the
//! online backup and restore of a store, against real store directories.

#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{backup, AuditEvent, BackupManifest, Finish, Ledger, LedgerError, Outgoing};
use kurzdraht_proto::v1::{DeliveryState, MessageKind, SignedEnvelope, SignedReceipt};
use std::collections::BTreeSet;

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const JN: &str = "jugendamt-norderstedt";

fn key() -> kurzdraht_ledger::DataKey {
    kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap()
}

fn open(dir: &std::path::Path) -> Ledger {
    Ledger::open_encrypted(dir, &key()).unwrap()
}

fn outgoing(id: &str, to: &str, consent: &str, kind: MessageKind) -> Outgoing {
    Outgoing {
        envelope: SignedEnvelope {
            header: format!("header of {id}").into_bytes(),
            payload: format!("payload of {id}").into_bytes(),
            signature: vec![7; 64],
            signer: JC.into(),
        },
        message_id: id.into(),
        kind,
        recipient: to.into(),
        consent_id: consent.into(),
        submitted_at_ms: 10,
        deadline_ms: 1_000_000_000,
        envelope_sha256: [id.len() as u8; 32],
    }
}

fn delivered() -> Finish {
    Finish::Delivered {
        receipt: SignedReceipt {
            receipt: vec![1; 40],
            signature: vec![2; 64],
            batch: None,
        },
    }
}

/// Queues `id` and delivers it at `at_ms`.
fn deliver(l: &Ledger, id: &str, to: &str, consent: &str, kind: MessageKind, at_ms: i64) {
    l.enqueue(&outgoing(id, to, consent, kind)).unwrap();
    l.finish(id, &delivered(), at_ms).unwrap();
}

fn listed(l: &Ledger, to: &str, since: i64) -> Vec<(String, bool)> {
    l.delivered_to(to, since, None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| (e.message_id, e.envelope_kept))
        .collect()
}

#[test]
fn a_delivered_message_is_kept_listed_per_peer_in_delivery_order_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let cert = MessageKind::CertificationRequest;
    deliver(&l, "m1", JA, "c1", cert, 1_000);
    deliver(&l, "m2", JN, "c1", cert, 1_500);
    deliver(&l, "m3", JA, "c2", cert, 2_000);
    deliver(&l, "m4", JA, "c2", cert, 2_000);
    // refused, rejected, expired: nothing is kept
    l.enqueue(&outgoing("r1", JA, "c1", cert)).unwrap();
    l.finish("r1", &Finish::Expired, 2_500).unwrap();

    let kept = l.kept_delivery("m3").unwrap().unwrap();
    assert_eq!(kept.recipient, JA);
    assert_eq!(kept.delivered_at_ms, 2_000);
    assert_eq!(
        kept.envelope.unwrap().payload,
        b"payload of m3".to_vec(),
        "the envelope exactly as delivered"
    );
    assert!(l.kept_delivery("r1").unwrap().is_none());
    assert_eq!(
        l.message("m3").unwrap().unwrap().status.unwrap().state,
        DeliveryState::Delivered as i32
    );
    assert_eq!(l.outbox_len(JA), 0, "the outbox entry is gone");

    let t = |s: &str| (s.to_string(), true);
    assert_eq!(listed(&l, JA, 0), vec![t("m1"), t("m3"), t("m4")]);
    assert_eq!(listed(&l, JN, 0), vec![t("m2")], "each peer sees its own");
    assert_eq!(listed(&l, JA, 1_001), vec![t("m3"), t("m4")], "since");
    assert!(
        listed(&l, "jugendamt", 0).is_empty(),
        "a name prefix is no peer"
    );

    // pages: a cursor continues after the entry it names
    let first = l.delivered_to(JA, 0, None, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = l.delivered_to(JA, 0, Some(first[1].cursor), 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].message_id, "m4");
    assert_eq!(rest[0].envelope_sha256, vec![2u8; 32]);
    assert!(l
        .delivered_to(JA, 0, Some(rest[0].cursor), 2)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_keep_window_is_pruned_through_the_time_index_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open(dir.path());
        let cert = MessageKind::CertificationRequest;
        for (i, at) in [1_000, 2_000, 3_000, 4_000, 5_000].into_iter().enumerate() {
            deliver(&l, &format!("m{i}"), JA, "c1", cert, at);
        }
        l.flush().await.unwrap();
    }
    let l = open(dir.path());
    assert_eq!(l.oldest_kept_ms().unwrap(), Some(1_000));
    assert_eq!(l.prune_kept(3_500, 9_000, 2).unwrap(), 2, "a step of 2");
    assert_eq!(l.prune_kept(3_500, 9_000, 2).unwrap(), 1);
    assert_eq!(l.prune_kept(3_500, 9_000, 2).unwrap(), 0);
    assert_eq!(
        listed(&l, JA, 0),
        vec![("m3".to_string(), true), ("m4".to_string(), true)]
    );
    assert!(l.kept_delivery("m0").unwrap().is_none());
    assert!(l.kept_delivery("m3").unwrap().is_some());
    assert_eq!(l.oldest_kept_ms().unwrap(), Some(4_000));
    // the receipt stays with the message's status
    let status = l.message("m0").unwrap().unwrap().status.unwrap();
    assert!(status.receipt.is_some());
    let pruned: Vec<_> = l
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::KeptPruned.as_str())
        .collect();
    assert_eq!(pruned.len(), 2, "one entry per step that pruned");
    assert!(pruned[0].message_id.is_empty(), "counts, not ids");
    l.verify_audit().unwrap();
}

#[test]
fn erasure_drops_kept_envelopes_but_withdrawal_notices_and_the_listing_stay() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    deliver(&l, "n1", JA, "c1", MessageKind::ConsentNotice, 1_000);
    deliver(&l, "m1", JA, "c1", MessageKind::CertificationRequest, 1_100);
    deliver(&l, "w1", JA, "c1", MessageKind::ConsentWithdrawal, 1_200);
    deliver(&l, "m2", JA, "c2", MessageKind::CertificationRequest, 1_300);
    let erased = BTreeSet::from(["c1".to_string()]);
    assert_eq!(
        l.drop_kept_under(&erased, AuditEvent::SubjectErased, 2_000)
            .unwrap(),
        2
    );
    assert!(
        l.kept_delivery("n1").unwrap().is_none(),
        "the notice names the person"
    );
    assert!(l.kept_delivery("m1").unwrap().is_none());
    assert!(l.kept_delivery("w1").unwrap().is_some(), "no personal data");
    assert!(l.kept_delivery("m2").unwrap().is_some(), "another consent");
    assert_eq!(
        listed(&l, JA, 0),
        vec![
            ("n1".to_string(), false),
            ("m1".to_string(), false),
            ("w1".to_string(), true),
            ("m2".to_string(), true)
        ],
        "a restored peer still learns what existed"
    );
    // again: nothing more to drop, nothing audited
    let entries = l.verify_audit().unwrap().entries;
    assert_eq!(
        l.drop_kept_under(&erased, AuditEvent::SubjectErased, 2_100)
            .unwrap(),
        0
    );
    assert_eq!(l.verify_audit().unwrap().entries, entries);
    // pruning still finds every entry of an erased delivery
    assert_eq!(l.prune_kept(1_250, 3_000, 100).unwrap(), 3);
    assert_eq!(listed(&l, JA, 0), vec![("m2".to_string(), true)]);
}

#[tokio::test]
async fn a_backup_restores_to_the_same_store_and_continues_its_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let archive = dir.path().join("backup.kzb");
    // sled's id generator jumps ahead at every open: a store opened a few times numbers its
    // queue higher than a store just restored would start
    for _ in 0..3 {
        drop(open(&store));
    }
    let l = open(&store);
    let cert = MessageKind::CertificationRequest;
    deliver(&l, "m1", JA, "c1", cert, 1_000);
    l.enqueue(&outgoing("q1", JA, "c1", cert)).unwrap();
    l.enqueue(&outgoing("q2", JA, "c1", cert)).unwrap();
    let manifest = BackupManifest {
        agency: JC.into(),
        taken_at_ms: 5_000,
        schema: 0,
    };
    let file = std::fs::File::create(&archive).unwrap();
    let exported = l.export(manifest.clone(), file).unwrap();
    assert!(exported.entries > 0);
    let entries_before = l.verify_audit().unwrap();
    // after the backup: not in it
    deliver(&l, "m2", JA, "c1", cert, 6_000);
    drop(l);

    let restored = dir.path().join("restored");
    let read = backup::restore(&archive, &restored).unwrap();
    assert_eq!(read.agency, JC);
    assert_eq!(read.taken_at_ms, 5_000);
    let r = open(&restored);
    assert_eq!(r.verify_audit().unwrap(), entries_before);
    assert!(r.kept_delivery("m1").unwrap().is_some());
    assert!(r.message("m2").unwrap().is_none(), "taken after the backup");
    // queued messages keep their order, and new ones queue behind them
    r.enqueue(&outgoing("q3", JA, "c1", cert)).unwrap();
    let lane = r.lane_of("c1").unwrap();
    let order: Vec<String> = r
        .outbox_batch(JA, lane, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(order, ["q1", "q2", "q3"]);

    // a store is restored only into an empty directory
    match backup::restore(&archive, &restored) {
        Err(LedgerError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_damaged_or_cut_archive_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir.path().join("store"));
    deliver(&l, "m1", JA, "c1", MessageKind::CertificationRequest, 1_000);
    let mut bytes = Vec::new();
    l.export(BackupManifest::default(), &mut bytes).unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, &bytes).unwrap();
    backup::check(&good).unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("cut", bytes[..bytes.len() - 40].to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            let i = b.len() / 2;
            b[i] ^= 1;
            b
        }),
        ("trailing", {
            let mut b = bytes.clone();
            b.push(0);
            b
        }),
        ("no archive", b"tar archive\n".to_vec()),
    ];
    for (what, damaged) in cases {
        let path = dir.path().join(what);
        std::fs::write(&path, damaged).unwrap();
        let into = dir.path().join(format!("{what}-store"));
        match backup::restore(&path, &into) {
            Err(LedgerError::Corrupt { what: w, .. }) => {
                assert!(w.starts_with("backup"), "{what}: {w}")
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
        assert!(!into.exists(), "{what}: nothing written");
    }
}

#[test]
fn a_restored_store_owes_a_reconciliation_until_every_peer_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    assert!(l.pending_reconciliation().unwrap().is_none());
    let manifest = BackupManifest {
        agency: JA.into(),
        taken_at_ms: 5_000,
        schema: 3,
    };
    l.mark_restored(&manifest, 4_000, 9_000).unwrap();
    let pending = l.pending_reconciliation().unwrap().unwrap();
    assert_eq!((pending.since_ms, pending.restored_at_ms), (4_000, 9_000));
    let peers = [JC.to_string(), JN.to_string()];
    assert_eq!(l.note_reconciled(JC, &peers).unwrap(), [JN.to_string()]);
    assert!(l.pending_reconciliation().unwrap().is_some());
    assert!(l.note_reconciled(JN, &peers).unwrap().is_empty());
    assert!(l.pending_reconciliation().unwrap().is_none());
    let events: Vec<String> = l
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, [AuditEvent::StoreRestored.as_str()]);
}

/// A writer that stops at its `stop_at`-th write (the first one inside the export's
/// pause: magic, manifest length and manifest come before it) until released.
struct Gate {
    writes: usize,
    stop_at: usize,
    started: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
    out: Vec<u8>,
}

impl std::io::Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes += 1;
        if self.writes == self.stop_at {
            let _ = self.started.send(());
            let _ = self.go.recv();
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_export_holds_every_transaction_back_until_it_has_copied_the_trees() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir.path().join("store"));
    let cert = MessageKind::CertificationRequest;
    deliver(&l, "m1", JA, "c1", cert, 1_000);
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let gate = Gate {
        writes: 0,
        stop_at: 4,
        started: started_tx,
        go: go_rx,
        out: Vec::new(),
    };
    let exporter = {
        let l = l.clone();
        std::thread::spawn(move || {
            let mut gate = gate;
            l.export(BackupManifest::default(), &mut gate).unwrap();
            gate.out
        })
    };
    started.recv().unwrap();
    let written = Arc::new(AtomicBool::new(false));
    let writer = {
        let (l, written) = (l.clone(), written.clone());
        std::thread::spawn(move || {
            l.enqueue(&outgoing("late", JA, "c1", cert)).unwrap();
            written.store(true, Ordering::SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !written.load(Ordering::SeqCst),
        "a transaction went through while the export was copying"
    );
    go.send(()).unwrap();
    let bytes = exporter.join().unwrap();
    writer.join().unwrap();
    assert!(
        written.load(Ordering::SeqCst),
        "it goes through once the copy is done"
    );
    let archive = dir.path().join("a.kzb");
    std::fs::write(&archive, bytes).unwrap();
    let restored = dir.path().join("restored");
    backup::restore(&archive, &restored).unwrap();
    let r = open(&restored);
    assert!(r.message("m1").unwrap().is_some());
    assert!(
        r.message("late").unwrap().is_none(),
        "not half of it either"
    );
    r.verify_audit().unwrap();
}

#[test]
fn a_rekeyed_store_opens_its_kept_deliveries_with_the_new_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    deliver(&l, "m1", JA, "c1", MessageKind::CertificationRequest, 1_000);
    let before = l.kept_delivery("m1").unwrap().unwrap();
    let new = kurzdraht_ledger::DataKey::from_hex(&"5c".repeat(32)).unwrap();
    l.rekey(&new).unwrap();
    let l = Ledger::open_encrypted(dir.path(), &new).unwrap();
    assert_eq!(l.kept_delivery("m1").unwrap().unwrap(), before);
    drop(l);
    assert!(matches!(
        Ledger::open_encrypted(dir.path(), &key()),
        Err(LedgerError::BadDataKey { .. })
    ));
}

/// A received envelope from `sender` of `payload` bytes, stored at `at_ms`.
fn receive(l: &Ledger, id: &str, sender: &str, payload: usize, at_ms: i64) {
    let record = kurzdraht_ledger::InboxRecord {
        message_id: id.into(),
        sender: sender.into(),
        kind: MessageKind::CertificationRequest as i32,
        envelope: Some(SignedEnvelope {
            header: format!("header of {id}").into_bytes(),
            payload: vec![9; payload],
            signature: vec![7; 64],
            signer: sender.into(),
        }),
        receipt: Some(SignedReceipt {
            receipt: vec![1; 40],
            signature: vec![2; 64],
            batch: None,
        }),
        envelope_sha256: [id.len() as u8; 32].to_vec(),
        received_at_ms: at_ms,
        ..Default::default()
    };
    l.accept_delivery(&record, &kurzdraht_ledger::ConsentEffect::None, at_ms)
        .unwrap();
}

fn ids_of(page: &kurzdraht_ledger::ReceivedPage) -> Vec<&str> {
    page.records.iter().map(|r| r.message_id.as_str()).collect()
}

/// What a peer hands a restored sender back (`ListReceived`): only that sender's envelopes,
/// from a time on, in arrival order, and each page bounded by entries, bytes (at least one)
/// and inbox records looked at, going on where the last one stopped.
#[test]
fn received_from_lists_only_the_senders_envelopes_within_every_bound() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    receive(&l, "jc-1", JC, 10, 100);
    receive(&l, "jn-1", JN, 10, 110);
    receive(&l, "jc-2", JC, 10, 120);
    receive(&l, "jc-3", JC, 600, 130);
    receive(&l, "jc-4", JC, 600, 140);
    let all = l.received_from(JC, 0, 0, 100, 1 << 20, 10_000).unwrap();
    assert_eq!(ids_of(&all), ["jc-1", "jc-2", "jc-3", "jc-4"]);
    assert_eq!(all.next_after, None, "the last page");
    // another sender: only its own
    let jn = l.received_from(JN, 0, 0, 100, 1 << 20, 10_000).unwrap();
    assert_eq!(ids_of(&jn), ["jn-1"]);
    assert!(l
        .received_from(JA, 0, 0, 100, 1 << 20, 10_000)
        .unwrap()
        .records
        .is_empty());
    // from a time on
    let late = l.received_from(JC, 125, 0, 100, 1 << 20, 10_000).unwrap();
    assert_eq!(ids_of(&late), ["jc-3", "jc-4"]);
    // by entries: pages of two, the second going on after the first
    let p1 = l.received_from(JC, 0, 0, 2, 1 << 20, 10_000).unwrap();
    assert_eq!(ids_of(&p1), ["jc-1", "jc-2"]);
    let after = p1.next_after.expect("more");
    let p2 = l.received_from(JC, 0, after, 2, 1 << 20, 10_000).unwrap();
    assert_eq!(ids_of(&p2), ["jc-3", "jc-4"]);
    // by bytes: an envelope that would go over ends the page, but a page holds at least one
    let small = l.received_from(JC, 0, 0, 100, 1_000, 10_000).unwrap();
    assert_eq!(ids_of(&small), ["jc-1", "jc-2", "jc-3"]);
    let one = l
        .received_from(JC, 0, small.next_after.unwrap(), 100, 1, 10_000)
        .unwrap();
    assert_eq!(ids_of(&one), ["jc-4"], "at least one, even over the bytes");
    // by records looked at: two looked at (jc-1, jn-1), one found, and it goes on from there
    let scanned = l.received_from(JC, 0, 0, 100, 1 << 20, 2).unwrap();
    assert_eq!(ids_of(&scanned), ["jc-1"]);
    let rest = l
        .received_from(JN, 0, scanned.next_after.unwrap(), 100, 1 << 20, 2)
        .unwrap();
    assert!(
        rest.records.is_empty(),
        "Norderstedt's is behind the cursor"
    );
    let rest = l
        .received_from(JC, 0, scanned.next_after.unwrap(), 100, 1 << 20, 10_000)
        .unwrap();
    assert_eq!(ids_of(&rest), ["jc-2", "jc-3", "jc-4"]);
}
