//! Restores that lose nothing: a node restored from an older backup receives again, from
//! its peers, what they delivered to it since (they keep what they delivered for a window),
//! each message exactly once and with its original receipt; backups are taken while the
//! node runs and written 0600. Real nodes (mutual TLS on loopback), the real `kurzdraht`
//! binary for `backup` and `restore`, real sled stores looked at offline.

use kurzdraht_ledger::{AuditEvent, Ledger};
use kurzdraht_node::service::reception::Refetched;
use kurzdraht_proto::v1::{self as pb, Purpose};
use kurzdraht_testkit::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Gives `agency`'s IT system an admin token (restarts its node).
async fn make_admin(h: &mut Harness, agency: &str) {
    h.reconfigure(agency, &[("\" }]", "\", admin = true }]")])
        .await;
}

/// Runs the `kurzdraht` binary with `args` off the async threads (the nodes it talks to run
/// on them); returns its output.
async fn kurzdraht(args: Vec<std::ffi::OsString>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run kurzdraht")
    })
    .await
    .expect("the kurzdraht process")
}

fn client_toml(h: &Harness, agency: &str) -> PathBuf {
    h.fed.dir.join(agency).join("client.toml")
}

fn node_toml(h: &Harness, agency: &str) -> PathBuf {
    h.fed.dir.join(agency).join("node.toml")
}

/// `kurzdraht backup` of `agency`'s running node into `out`.
async fn backup(h: &Harness, agency: &str, out: &Path) {
    let o = kurzdraht(vec![
        "backup".into(),
        "--client".into(),
        client_toml(h, agency).into(),
        "--out".into(),
        out.into(),
    ])
    .await;
    assert!(
        o.status.success(),
        "kurzdraht backup failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the archive")
        .permissions()
        .mode()
        & 0o777
}

/// Stops `agency`'s node, moves its store aside (as the handbook says) and restores
/// `archive` with `kurzdraht restore`; the node stays stopped.
async fn restore(h: &mut Harness, agency: &str, archive: &Path) {
    h.stop(agency).await;
    let data = h.data_dir(agency);
    let mut aside = data.clone().into_os_string();
    aside.push(".before-restore");
    std::fs::rename(&data, &aside).expect("move the store aside");
    let o = kurzdraht(vec![
        "restore".into(),
        "--config".into(),
        node_toml(h, agency).into(),
        "--from".into(),
        archive.into(),
    ])
    .await;
    assert!(
        o.status.success(),
        "kurzdraht restore failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `agency`'s store, opened offline with its data key (the node must be stopped).
fn open_offline(h: &Harness, agency: &str) -> Ledger {
    let config = h.fed.config(agency).expect("config");
    Ledger::open_encrypted(&config.data_dir, &config.data_key).expect("open the store offline")
}

fn events_of(l: &Ledger) -> Vec<kurzdraht_ledger::records::AuditEntry> {
    l.audit_entries().expect("the audit chain")
}

/// Waits until `agency`'s running node owes no reconciliation any more.
async fn wait_reconciled(h: &Harness, agency: &str) {
    let node = h.node(agency).clone();
    wait_until(&format!("{agency} has reconciled with every peer"), || {
        let node = node.clone();
        async move {
            match node.ledger().pending_reconciliation() {
                Ok(None) => Ok(()),
                Ok(Some(p)) => Err(format!("done with {:?}", p.peers_done)),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
}

/// The messages `from` delivered to `to`, with their statuses (receipts), by id.
async fn delivered(h: &Harness, from: &str, ids: &[String]) -> BTreeMap<String, pb::MessageStatus> {
    let c = h.client(from).await;
    let mut out = BTreeMap::new();
    for id in ids {
        out.insert(
            id.clone(),
            wait_for_state(&c, id, pb::DeliveryState::Delivered).await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jugendamt_restored_from_an_older_backup_receives_every_message_exactly_once() {
    let mut h = start().await;
    make_admin(&mut h, JA).await;
    let mut jc = h.client(JC).await;

    // Before the backup: a consent (its notice) and two messages.
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c1 = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let c1_id = c1.consent.expect("record").consent_id;
    let mut ids = c1.notice_message_ids.clone();
    for reason in ["Antrag auf Zusicherung", "Nachfrage"] {
        ids.push(submit_ok(&mut jc, JA, &c1_id, certification_request(&lena, reason)).await);
    }
    let before = delivered(&h, JC, &ids).await;

    let archive = h.dir.path().join("jugendamt-kreis-segeberg.kzb");
    backup(&h, JA, &archive).await;
    assert_eq!(mode_of(&archive), 0o600, "the archive is the owner's only");

    // After the backup: another message under the first consent, a second consent and a
    // message under it, and the first consent withdrawn.
    ids.push(
        submit_ok(
            &mut jc,
            JA,
            &c1_id,
            certification_request(&lena, "Erinnerung"),
        )
        .await,
    );
    let jonas = subject("Jonas", "Petersen", &birthday_years_ago(19));
    let c2 = record_consent(
        &mut jc,
        consent_request(&jonas, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let c2_id = c2.consent.expect("record").consent_id;
    ids.extend(c2.notice_message_ids.clone());
    ids.push(submit_ok(&mut jc, JA, &c2_id, certification_request(&jonas, "Antrag")).await);
    let w = jc
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: c1_id.clone(),
            recorded_by: "Herr Jensen".into(),
            manner: "schriftlich".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    ids.extend(w.notice_message_ids.clone());
    let all = delivered(&h, JC, &ids).await;
    assert_eq!(all.len(), 7, "3 before the backup, 4 after");
    let after: Vec<&String> = all.keys().filter(|id| !before.contains_key(*id)).collect();
    // what the Jugendamt held before the loss: each message with its receipt
    let held_before: BTreeMap<String, pb::SignedReceipt> = ids
        .iter()
        .map(|id| {
            let r = h
                .node(JA)
                .ledger()
                .inbox_record(id)
                .expect("read")
                .expect("held");
            (id.clone(), r.receipt.expect("a receipt"))
        })
        .collect();

    restore(&mut h, JA, &archive).await;

    // Control: the restored store lacks what came after the backup.
    {
        let l = open_offline(&h, JA);
        for id in &after {
            assert!(
                l.inbox_record(id).expect("read").is_none(),
                "{id} is not in the backup"
            );
        }
        for id in before.keys() {
            assert!(l.inbox_record(id).expect("read").is_some(), "{id} is");
        }
        assert!(
            l.pending_reconciliation().expect("read").is_some(),
            "marked by restore"
        );
        l.verify_audit().expect("the restored chain verifies");
    }

    // The node reconciles with its peers when it starts.
    h.restart(JA).await;
    wait_reconciled(&h, JA).await;

    let ja = h.client(JA).await;
    let inbox = wait_for_inbox_len(&ja, ids.len()).await;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &inbox {
        *count.entry(item.message_id.as_str()).or_default() += 1;
    }
    for (id, status) in &all {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "{id} is held exactly once"
        );
        let item = inbox.iter().find(|i| &i.message_id == id).expect("held");
        verify_delivery(&h, JC, JA, status, item);
        let held = h
            .node(JA)
            .ledger()
            .inbox_record(id)
            .expect("read")
            .expect("held");
        assert_eq!(
            held.receipt.as_ref(),
            status.receipt.as_ref(),
            "{id}: the receipt the sender holds"
        );
        assert_eq!(
            held.receipt.as_ref(),
            held_before.get(id),
            "{id}: the receipt as before the loss"
        );
    }
    assert_eq!(inbox.len(), ids.len(), "nothing else");
    // The oracle: the sender's own records of what it delivered to the Jugendamt.
    let oracle: std::collections::BTreeSet<String> = h
        .node(JC)
        .ledger()
        .delivered_to(JA, 0, None, 10_000)
        .expect("the Jobcenter's delivered records")
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    let held: std::collections::BTreeSet<String> =
        inbox.iter().map(|i| i.message_id.clone()).collect();
    assert_eq!(held, oracle, "held here = delivered there");
    // the consents as before the loss: the second in force, the first withdrawn after its
    // messages came (the withdrawal was delivered after them and came back after them)
    wait_for_consent_state(&ja, &c2_id, pb::ConsentState::ConsentInForce).await;
    wait_for_consent_state(&ja, &c1_id, pb::ConsentState::ConsentWithdrawn).await;

    // Asked again: everything is held, nothing is received twice.
    let mut admin = h.client(JA).await;
    let again = admin
        .reconcile(pb::ReconcileRequest {
            peer: JC.into(),
            since_ms: 0,
        })
        .await
        .expect("reconcile")
        .into_inner();
    let r = &again.peers[0];
    assert_eq!(
        (r.listed, r.held, r.received, r.refused, r.unavailable),
        (7, 7, 0, 0, 0)
    );
    assert!(r.error.is_empty(), "{}", r.error);
    // and by hand, as the operator would (deploy/README.md)
    let o = kurzdraht(vec![
        "reconcile".into(),
        "--client".into(),
        client_toml(&h, JA).into(),
        "--peer".into(),
        JC.into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        stdout.trim(),
        format!("{JC}: listed 7, held already 7, received again 0, refused 0, unavailable 0")
    );

    // The audit chains record it, and verify.
    h.stop(JA).await;
    let l = open_offline(&h, JA);
    l.verify_audit().expect("the chain verifies");
    let entries = events_of(&l);
    let of = |event: AuditEvent| entries.iter().filter(move |e| e.event == event.as_str());
    assert_eq!(of(AuditEvent::StoreRestored).count(), 1);
    let received: Vec<&str> = of(AuditEvent::ReconciliationReceived)
        .map(|e| e.message_id.as_str())
        .collect();
    let mut expected: Vec<&str> = after.iter().map(|s| s.as_str()).collect();
    expected.sort();
    let mut got = received.clone();
    got.sort();
    assert_eq!(got, expected, "each message the backup lacked, once");
    let finished: Vec<(String, String)> = of(AuditEvent::ReconciliationFinished)
        .map(|e| (e.peer.clone(), e.detail.clone()))
        .collect();
    assert!(
        finished.contains(&(
            JC.to_string(),
            "listed 7, held 3, received 4, refused 0, unavailable 0".to_string()
        )),
        "{finished:?}"
    );
    assert!(
        finished
            .iter()
            .any(|(p, d)| p == JN && d.starts_with("listed 0,")),
        "{finished:?}"
    );
    assert!(of(AuditEvent::ReconciliationStarted).count() >= 3);
    assert!(l.pending_reconciliation().expect("read").is_none());
    let served = h
        .node(JC)
        .ledger()
        .audit_entries()
        .expect("JC's chain")
        .into_iter()
        .filter(|e| e.event == AuditEvent::ReconciliationServed.as_str() && e.peer == JA)
        .count();
    assert!(served >= 1, "the Jobcenter records what it handed over");
}

/// `agency`'s backup taken through its running node (the `Backup` call's path without
/// the CLI), written to `out`.
async fn backup_in_process(h: &Harness, agency: &str, out: &Path) {
    let mut chunks = h
        .node(agency)
        .backup()
        .take("test")
        .await
        .expect("a backup");
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        bytes.extend(chunk.expect("a chunk").data);
    }
    std::fs::write(out, bytes).expect("write the archive");
}

/// Replaces `agency`'s store by `archive` without marking it for reconciliation (as a
/// restore by other means, e.g. a VM snapshot, would), and starts the node again.
async fn restore_unmarked(h: &mut Harness, agency: &str, archive: &Path) {
    h.stop(agency).await;
    let data = h.data_dir(agency);
    std::fs::remove_dir_all(&data).expect("remove the store");
    kurzdraht_ledger::backup::restore(archive, &data).expect("restore");
    h.restart(agency).await;
}

fn kept(h: &Harness, agency: &str, id: &str) -> Option<kurzdraht_ledger::KeptDelivery> {
    h.node(agency).ledger().kept_delivery(id).expect("read")
}

fn audited(
    h: &Harness,
    agency: &str,
    event: AuditEvent,
) -> Vec<kurzdraht_ledger::records::AuditEntry> {
    h.node(agency)
        .ledger()
        .audit_entries()
        .expect("the chain")
        .into_iter()
        .filter(|e| e.event == event.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_messages_flow_holds_everything_acknowledged_before_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut h = start().await;
    make_admin(&mut h, JC).await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (acked, stop, mut jc, lena, c) = (
            acked.clone(),
            stop.clone(),
            jc.clone(),
            lena.clone(),
            c.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = submit_ok(&mut jc, JA, &c, certification_request(&lena, "Antrag")).await;
                acked.lock().expect("ids").push(id);
            }
        })
    };
    let count = |acked: &Arc<Mutex<Vec<String>>>| acked.lock().expect("ids").len();
    wait_until("20 submissions are acknowledged", || {
        let n = count(&acked);
        async move {
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        }
    })
    .await;
    let before: Vec<String> = acked.lock().expect("ids").clone();
    let archive = h.dir.path().join("jobcenter.kzb");
    backup(&h, JC, &archive).await;
    let at_end = count(&acked);
    wait_until("submissions go on after the backup", || {
        let n = count(&acked);
        async move {
            if n >= at_end + 10 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    submitter.await.expect("the submitter");
    assert_eq!(mode_of(&archive), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(h.data_dir(JC))
        .expect("data_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the node's copy is deleted once streamed"
    );

    // Restored elsewhere, offline: the chain verifies, everything acknowledged before the
    // backup began is there, and the trees agree (one consistent state).
    let into = h.dir.path().join("restored-jobcenter");
    let manifest = kurzdraht_ledger::backup::restore(&archive, &into).expect("restore");
    assert_eq!(manifest.agency, JC);
    let l = Ledger::open_encrypted(&into, &h.fed.config(JC).expect("config").data_key)
        .expect("the restored store opens with the Jobcenter's data key");
    l.verify_audit().expect("the restored chain verifies");
    let mut queued_records = std::collections::BTreeSet::new();
    let mut records = 0;
    for r in l.message_records_iter() {
        let s = r.expect("a record").status.expect("a status");
        records += 1;
        if s.state == pb::DeliveryState::Queued as i32 {
            queued_records.insert(s.message_id.clone());
        } else if s.state == pb::DeliveryState::Delivered as i32 {
            assert!(
                l.kept_delivery(&s.message_id).expect("read").is_some(),
                "{}: delivered and kept",
                s.message_id
            );
            assert!(s.receipt.is_some());
        }
    }
    for id in &before {
        assert!(
            l.message(id).expect("read").is_some(),
            "{id} was acknowledged before the backup"
        );
    }
    let mut queued_entries = std::collections::BTreeSet::new();
    for lane in 0..kurzdraht_ledger::DELIVERY_LANES {
        for e in l.outbox_batch(JA, lane, 100_000).expect("outbox") {
            queued_entries.insert(e.message_id);
        }
    }
    assert_eq!(
        queued_records, queued_entries,
        "every queued status has its outbox entry and back"
    );
    assert!(
        records > before.len(),
        "the consent notice and the submissions"
    );

    // `kurzdraht restore` takes only a backup of the node's own agency.
    let o = kurzdraht(vec![
        "restore".into(),
        "--config".into(),
        node_toml(&h, JA).into(),
        "--from".into(),
        archive.clone().into(),
    ])
    .await;
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "is a backup of jobcenter-segeberg, but this node is jugendamt-kreis-segeberg"
        ),
        "{stderr}"
    );

    // Over a store: refused while the node runs, even with --replace; refused without
    // --replace when it is stopped; with --replace the store is moved aside, not deleted.
    let jc_toml = node_toml(&h, JC);
    let restore_jc = |replace: bool| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "restore".into(),
            "--config".into(),
            jc_toml.clone().into(),
            "--from".into(),
            archive.clone().into(),
        ];
        if replace {
            args.push("--replace".into());
        }
        kurzdraht(args)
    };
    let names = |dir: &Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("read the dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let data = h.data_dir(JC);
    let parent = data.parent().expect("a parent").to_path_buf();
    let store_before = names(&data);
    let o = restore_jc(true).await;
    assert!(!o.status.success(), "refused while the node runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("stop the node first"), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(
        names(&data),
        store_before,
        "the running node's store untouched"
    );
    assert!(
        !names(&parent)
            .iter()
            .any(|n| n.contains(".before-restore-")),
        "nothing moved"
    );
    h.stop(JC).await;
    let store_before = names(&data); // sled wrote a snapshot when it closed
    let o = restore_jc(false).await;
    assert!(!o.status.success(), "refused over a store");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("add --replace"), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(names(&data), store_before, "the store untouched");
    assert!(
        open_offline(&h, JC)
            .pending_reconciliation()
            .expect("read")
            .is_none(),
        "not marked"
    );
    let o = restore_jc(true).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let aside: Vec<String> = names(&parent)
        .into_iter()
        .filter(|n| {
            n.starts_with(&format!(
                "{}.before-restore-",
                data.file_name().expect("a name").to_string_lossy()
            ))
        })
        .collect();
    assert_eq!(aside.len(), 1, "the old store moved aside: {aside:?}");
    {
        let old = Ledger::open_encrypted(
            &parent.join(&aside[0]),
            &h.fed.config(JC).expect("config").data_key,
        )
        .expect("the store moved aside opens");
        for id in acked.lock().expect("ids").iter() {
            assert!(old.message(id).expect("read").is_some(), "{id} kept aside");
        }
    }
    let l = open_offline(&h, JC);
    assert!(
        l.pending_reconciliation().expect("read").is_some(),
        "marked"
    );
    for id in &before {
        assert!(l.message(id).expect("read").is_some(), "{id} restored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reconciliation_calls_answer_only_about_the_caller_and_within_their_bounds() {
    use kurzdraht_node::tls;
    use pb::peer_exchange_client::PeerExchangeClient;
    use tonic::Code;
    let h = start().await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let both = record_consent(
        &mut jc,
        consent_request(&lena, &[JA, JN], &[Purpose::U25MoveOut]),
    )
    .await;
    let c = both.consent.expect("record").consent_id;
    let mut to_ja = vec![];
    for reason in ["eins", "zwei"] {
        to_ja.push(submit_ok(&mut jc, JA, &c, certification_request(&lena, reason)).await);
    }
    let notices = delivered(&h, JC, &both.notice_message_ids).await;
    delivered(&h, JC, &to_ja).await;
    let notice_to = |peer: &str| {
        notices
            .values()
            .find(|s| s.recipient == peer)
            .expect("a notice")
            .message_id
            .clone()
    };
    to_ja.insert(0, notice_to(JA));

    let peer_as = |agency: &'static str| {
        let cfg = h.fed.config(agency).expect("config");
        let jc_addr = h.fed.config(JC).expect("config").peer_addr;
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{jc_addr}"))
                .expect("endpoint")
                .tls_config(tls::peer_client_tls(&cfg.tls, JC))
                .expect("tls")
                .connect()
                .await
                .expect("connect");
            PeerExchangeClient::new(channel)
        }
    };
    let list = |since_ms: i64, after: &str, limit: u32| pb::ListDeliveredRequest {
        since_ms,
        after: after.into(),
        limit,
    };
    let mut as_jn = peer_as(JN).await;
    let mut as_ja = peer_as(JA).await;

    // Each peer sees only what was delivered to it.
    let jn_page = as_jn
        .list_delivered(list(0, "", 0))
        .await
        .expect("list")
        .into_inner();
    let jn_ids: Vec<&str> = jn_page
        .entries
        .iter()
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(jn_ids, [notice_to(JN).as_str()]);
    assert!(jn_page.next_after.is_empty());
    let asked = pb::FetchDeliveredRequest {
        message_ids: to_ja.clone(),
    };
    let got = as_jn
        .fetch_delivered(asked.clone())
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(got.envelopes.len(), 3);
    assert!(
        got.envelopes
            .iter()
            .all(|k| k.envelope.is_none() && k.receipt.is_none()),
        "nothing of another agency's"
    );
    // control: the Jugendamt gets its own
    let got = as_ja
        .fetch_delivered(asked)
        .await
        .expect("fetch")
        .into_inner();
    let ids: Vec<&str> = got
        .envelopes
        .iter()
        .map(|k| k.message_id.as_str())
        .collect();
    assert_eq!(ids, to_ja.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(got
        .envelopes
        .iter()
        .all(|k| k.envelope.is_some() && k.receipt.is_some()));

    // Pages, in delivery order.
    let mut seen = vec![];
    let mut after = String::new();
    loop {
        let page = as_ja
            .list_delivered(list(0, &after, 1))
            .await
            .expect("page")
            .into_inner();
        assert!(page.entries.len() <= 1);
        seen.extend(page.entries.into_iter().map(|e| e.message_id));
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(
        seen, to_ja,
        "one a page, all of them, in the order delivered"
    );
    let later = as_ja
        .list_delivered(list(clock_now() + 60_000, "", 0))
        .await
        .expect("list")
        .into_inner();
    assert!(later.entries.is_empty(), "since");

    // Bounds and bad requests: refused naming the field.
    let field_of = |s: &tonic::Status| s.message().to_string();
    let s = expect_refusal(
        "a page over 1,000",
        as_ja.list_delivered(list(0, "", 1001)).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(field_of(&s).contains("limit"), "{s:?}");
    let s = expect_refusal(
        "a cursor not given",
        as_ja.list_delivered(list(0, "zz", 0)).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(field_of(&s).contains("after"), "{s:?}");
    let s = expect_refusal(
        "since before 1970",
        as_ja.list_delivered(list(-1, "", 0)).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(field_of(&s).contains("since_ms"), "{s:?}");
    let many = pb::FetchDeliveredRequest {
        message_ids: vec![to_ja[0].clone(); 257],
    };
    let s = expect_refusal(
        "257 ids",
        as_ja.fetch_delivered(many).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(field_of(&s).contains("message_ids"), "{s:?}");
    let bad = pb::FetchDeliveredRequest {
        message_ids: vec![to_ja[0].clone(), "no-id".into()],
    };
    let s = expect_refusal(
        "an id that is none",
        as_ja.fetch_delivered(bad).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(field_of(&s).contains("message_ids[1]"), "{s:?}");
    // 256 is within the bound
    let most = pb::FetchDeliveredRequest {
        message_ids: vec![to_ja[0].clone(); 256],
    };
    assert_eq!(
        as_ja
            .fetch_delivered(most)
            .await
            .expect("256 ids")
            .into_inner()
            .envelopes
            .len(),
        256
    );

    // The operators' calls need an admin token.
    let r = jc.backup(pb::BackupRequest {}).await.map(|_| ());
    expect_refusal(
        "Backup with an IT system's token",
        r,
        Code::PermissionDenied,
        "permission-denied",
    );
    let r = jc.reconcile(pb::ReconcileRequest::default()).await;
    expect_refusal(
        "Reconcile with an IT system's token",
        r,
        Code::PermissionDenied,
        "permission-denied",
    );
}

fn clock_now() -> i64 {
    kurzdraht_node::clock::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_at_the_sender_leaves_a_restored_peer_the_ids_but_no_bodies() {
    let mut h = start().await;
    let archive = h.dir.path().join("ja-empty.kzb");
    backup_in_process(&h, JA, &archive).await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let jonas = subject("Jonas", "Petersen", &birthday_years_ago(19));
    let c1 = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let c1_id = c1.consent.expect("record").consent_id;
    let m1 = submit_ok(&mut jc, JA, &c1_id, certification_request(&lena, "Antrag")).await;
    let c2 = record_consent(
        &mut jc,
        consent_request(&jonas, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let lena_ids = vec![c1.notice_message_ids[0].clone(), m1.clone()];
    let jonas_ids = c2.notice_message_ids.clone();
    delivered(&h, JC, &lena_ids).await;
    delivered(&h, JC, &jonas_ids).await;
    for id in lena_ids.iter().chain(&jonas_ids) {
        assert!(kept(&h, JC, id).is_some(), "{id} is kept once delivered");
    }

    jc.erase_subject(pb::SubjectAccessRequest {
        given_name: "Lena".into(),
        family_name: "Hansen".into(),
        date_of_birth: lena.date_of_birth.clone(),
    })
    .await
    .expect("erase");
    for id in &lena_ids {
        assert!(
            kept(&h, JC, id).is_none(),
            "{id}: no body of the person is kept"
        );
        assert!(
            status(&mut jc, id).await.receipt.is_some(),
            "{id}: the receipt stays"
        );
    }
    assert!(
        kept(&h, JC, &jonas_ids[0]).is_some(),
        "another person's stays"
    );
    let dropped: Vec<String> = audited(&h, JC, AuditEvent::SubjectErased)
        .into_iter()
        .filter(|e| e.detail == "kept delivered envelope dropped")
        .map(|e| e.message_id)
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");

    restore_unmarked(&mut h, JA, &archive).await;
    let r = h.node(JA).reconciliation().reconcile_with(JC, 0).await;
    assert!(r.error.is_empty(), "{}", r.error);
    assert_eq!(
        (r.listed, r.held, r.received, r.refused, r.unavailable),
        (3, 0, 1, 0, 2)
    );
    let ja = h.node(JA).ledger();
    for id in &lena_ids {
        assert!(ja.inbox_record(id).expect("read").is_none(), "{id}");
    }
    assert!(ja.inbox_record(&jonas_ids[0]).expect("read").is_some());
    let unavailable: Vec<String> = audited(&h, JA, AuditEvent::ReconciliationUnavailable)
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(unavailable.len(), 2);
    for id in &lena_ids {
        assert!(unavailable.contains(id), "{id} audited as unavailable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_envelope_older_than_the_replay_window_is_received_again_only_with_its_own_receipt() {
    const DAY: i64 = 24 * 3600 * 1000;
    let (mut h, clocks) = start_on_manual_clocks().await;
    let archive = h.dir.path().join("ja-empty.kzb");
    backup_in_process(&h, JA, &archive).await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c1 = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let c1_id = c1.consent.expect("record").consent_id;
    let notice = c1.notice_message_ids[0].clone();
    let m1 = submit_ok(&mut jc, JA, &c1_id, certification_request(&lena, "Antrag")).await;
    let statuses = delivered(&h, JC, &[notice.clone(), m1.clone()]).await;

    // Nine days on: past the replay window (8 days), within the keep window (30 days).
    for c in clocks.values() {
        c.advance(9 * DAY);
    }
    restore_unmarked(&mut h, JA, &archive).await;
    let refetched = |id: &str, receipt: Option<pb::SignedReceipt>| Refetched {
        message_id: id.to_string(),
        envelope: kept(&h, JC, id)
            .expect("kept")
            .envelope
            .expect("an envelope"),
        receipt,
    };
    // Without a receipt, and with the receipt of another message: decided as a delivery,
    // so refused as too old.
    let wrong = statuses[&m1].receipt.clone();
    for receipt in [None, wrong] {
        let mut out = h
            .node(JA)
            .reception()
            .receive_refetched(JC, vec![refetched(&notice, receipt)])
            .await;
        match out.pop() {
            Some(Err(kurzdraht_node::NodeError::Invalid { field, .. })) => {
                assert_eq!(field, "header.created_at_ms")
            }
            other => panic!("expected a refusal of the old envelope, got {other:?}"),
        }
    }
    let refused = audited(&h, JA, AuditEvent::ReconciliationRefused);
    assert_eq!(refused.len(), 2);
    assert!(refused
        .iter()
        .all(|e| e.message_id == notice && e.detail == "invalid-argument"));
    assert!(h
        .node(JA)
        .ledger()
        .inbox_record(&notice)
        .expect("read")
        .is_none());

    // With its own receipt: received, with that receipt, its consent judged when it was
    // first received (the message under it too).
    let r = h.node(JA).reconciliation().reconcile_with(JC, 0).await;
    assert!(r.error.is_empty(), "{}", r.error);
    assert_eq!((r.listed, r.received, r.refused), (2, 2, 0));
    for (id, status) in &statuses {
        let held = h
            .node(JA)
            .ledger()
            .inbox_record(id)
            .expect("read")
            .expect("held");
        assert_eq!(held.receipt, status.receipt, "{id}");
    }
    wait_for_consent_state(
        &h.client(JA).await,
        &c1_id,
        pb::ConsentState::ConsentInForce,
    )
    .await;

    // Past the keep window the sender forgets: the sweep drops what it kept.
    clocks[JC].advance(22 * DAY);
    h.node(JC)
        .retention()
        .apply_retention()
        .await
        .expect("sweep");
    assert!(kept(&h, JC, &m1).is_none());
    assert!(
        status(&mut jc, &m1).await.receipt.is_some(),
        "the receipt stays"
    );
    let r = h.node(JA).reconciliation().reconcile_with(JC, 0).await;
    assert_eq!(r.listed, 0);
    assert_eq!(
        r.kept_since_ms,
        kurzdraht_node::clock::Clock::now_ms(&*clocks[JC]) - 30 * DAY
    );
    assert!(!audited(&h, JC, AuditEvent::KeptPruned).is_empty());
}

/// What the restored node had sent: a message still queued when the backup was taken is
/// queued again after the restore and delivered again with the same envelope; the
/// recipient answers it as a duplicate with its original receipt and holds it once. A
/// message sent (and delivered) after the backup is unknown to the restored node: the
/// recipient holds it and the sender lost it (docs: deploy/README.md, "Backup and restore").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_restored_from_an_older_backup_sends_again_what_it_had_queued_and_is_answered_once(
) {
    let mut h = start().await;
    make_admin(&mut h, JC).await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    delivered(&h, JC, &c.notice_message_ids).await;
    let c = c.consent.expect("record").consent_id;

    h.stop(JA).await;
    let queued = submit_ok(&mut jc, JA, &c, certification_request(&lena, "Antrag")).await;
    assert_eq!(state_name(status(&mut jc, &queued).await.state), "QUEUED");
    let archive = h.dir.path().join("jobcenter-queued.kzb");
    backup(&h, JC, &archive).await;
    h.restart(JA).await;
    let first = delivered(&h, JC, std::slice::from_ref(&queued)).await;
    let first_receipt = first[&queued].receipt.clone().expect("a receipt");
    let later = submit_ok(&mut jc, JA, &c, certification_request(&lena, "Nachtrag")).await;
    delivered(&h, JC, std::slice::from_ref(&later)).await;

    restore(&mut h, JC, &archive).await;
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    let again = delivered(&h, JC, std::slice::from_ref(&queued)).await;
    assert_eq!(
        again[&queued].receipt.as_ref(),
        Some(&first_receipt),
        "answered with the original receipt"
    );
    let mut ja = h.client(JA).await;
    let inbox = read_inbox(&mut ja, 0).await;
    for id in [&queued, &later] {
        assert_eq!(
            inbox.iter().filter(|i| &i.message_id == id).count(),
            1,
            "{id} held once"
        );
    }
    let dups: Vec<_> = audited(&h, JA, AuditEvent::ReceivedDuplicate)
        .into_iter()
        .filter(|e| e.message_id == queued)
        .collect();
    assert_eq!(dups.len(), 1, "the second delivery noted as a duplicate");
    // Sent after the backup: the restored Jobcenter learns it again from the Jugendamt, which
    // holds it with its receipt (ListReceived).
    wait_reconciled(&h, JC).await;
    let s = status(&mut jc, &later).await;
    assert_eq!(state_name(s.state), "DELIVERED");
    let held = h
        .node(JA)
        .ledger()
        .inbox_record(&later)
        .expect("read")
        .expect("held");
    assert_eq!(s.receipt, held.receipt, "the Jugendamt's receipt");
}

/// A peer down when the restored node starts: the reconciliation with it stops (audited),
/// the others run, and it is asked again until it answers; the store owes it till then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_node_whose_peer_is_down_reconciles_with_it_once_it_is_back() {
    let mut h = start().await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let mut ids = c.notice_message_ids.clone();
    let c = c.consent.expect("record").consent_id;
    delivered(&h, JC, &ids).await;
    let archive = h.dir.path().join("jugendamt-peer-down.kzb");
    backup_in_process(&h, JA, &archive).await;
    let m = submit_ok(&mut jc, JA, &c, certification_request(&lena, "Antrag")).await;
    ids.push(m.clone());
    delivered(&h, JC, &ids).await;

    restore(&mut h, JA, &archive).await;
    h.stop(JC).await;
    h.restart(JA).await;
    let node = h.node(JA).clone();
    wait_until("the Jugendamt is done with Norderstedt only", || {
        let node = node.clone();
        async move {
            match node.ledger().pending_reconciliation() {
                Ok(Some(p)) if p.peers_done == [JN.to_string()] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let stopped = audited(&h, JA, AuditEvent::ReconciliationFinished)
        .into_iter()
        .filter(|e| e.peer == JC)
        .collect::<Vec<_>>();
    assert!(
        !stopped.is_empty() && stopped.iter().all(|e| e.detail.contains("; stopped: ")),
        "{stopped:?}"
    );
    assert!(
        h.node(JA)
            .ledger()
            .inbox_record(&m)
            .expect("read")
            .is_none(),
        "not yet"
    );

    h.restart(JC).await;
    wait_reconciled(&h, JA).await;
    assert!(h
        .node(JA)
        .ledger()
        .inbox_record(&m)
        .expect("read")
        .is_some());
    let done: Vec<String> = audited(&h, JA, AuditEvent::ReconciliationFinished)
        .into_iter()
        .filter(|e| e.peer == JC && !e.detail.contains("stopped"))
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        done,
        ["listed 2, held 1, received 1, refused 0, unavailable 0"]
    );
}

/// The other direction: a Jobcenter restored from an older backup learns again from its
/// peers what it sent and recorded after the backup (ListReceived): a withdrawal holds again
/// (a submission under it is refused here, a message queued under it is stopped, the
/// recipient that had not got the withdrawal gets it), a consent recorded after the backup
/// is in force again, and the messages it had sent answer GetStatus with the peer's receipt.
/// Asking again changes nothing; a peer that is not the sender gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jobcenter_restored_from_an_older_backup_learns_again_what_it_sent_and_withdrew() {
    use kurzdraht_node::tls;
    use pb::peer_exchange_client::PeerExchangeClient;
    use tonic::Code;
    let mut h = start().await;
    make_admin(&mut h, JC).await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(20));
    let c1 = record_consent(
        &mut jc,
        consent_request(&lena, &[JA, JN], &[Purpose::U25MoveOut]),
    )
    .await;
    let c1_id = c1.consent.clone().expect("record").consent_id;
    let mut before = c1.notice_message_ids.clone();
    before.push(submit_ok(&mut jc, JA, &c1_id, certification_request(&lena, "Antrag")).await);
    delivered(&h, JC, &before).await;
    // Norderstedt is down: a message to it under the first consent waits in the queue.
    h.stop(JN).await;
    let queued = submit_ok(&mut jc, JN, &c1_id, certification_request(&lena, "Auszug")).await;
    let archive = h.dir.path().join("jobcenter-sent.kzb");
    backup(&h, JC, &archive).await;

    // After the backup: a second consent, messages under both, the first withdrawn.
    let jonas = subject("Jonas", "Petersen", &birthday_years_ago(19));
    let c2 = record_consent(
        &mut jc,
        consent_request(&jonas, &[JA], &[Purpose::U25MoveOut]),
    )
    .await;
    let c2_record = c2.consent.clone().expect("record");
    let c2_id = c2_record.consent_id.clone();
    let mut after = c2.notice_message_ids.clone();
    after.push(submit_ok(&mut jc, JA, &c2_id, certification_request(&jonas, "Antrag")).await);
    after.push(
        submit_ok(
            &mut jc,
            JA,
            &c1_id,
            certification_request(&lena, "Erinnerung"),
        )
        .await,
    );
    // Delivered before the withdrawal: a withdrawal stops what is still queued under its
    // consent, so a reminder the worker had not taken yet would rightly be REFUSED
    // (`consent-withdrawn`) — the race this test lost under load.
    let mut sent = delivered(&h, JC, &after).await;
    let w = jc
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: c1_id.clone(),
            recorded_by: "Herr Jensen".into(),
            manner: "schriftlich".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    let withdrawal = w.withdrawal.clone().expect("the withdrawal");
    let mut to_ja_withdrawal = Vec::new();
    for id in &w.notice_message_ids {
        if status(&mut jc, id).await.recipient == JA {
            to_ja_withdrawal.push(id.clone());
        }
    }
    assert_eq!(
        to_ja_withdrawal.len(),
        1,
        "one withdrawal notice to the Jugendamt"
    );
    sent.extend(delivered(&h, JC, &to_ja_withdrawal).await);
    after.extend(to_ja_withdrawal);
    let stopped = wait_for_state(&jc, &queued, pb::DeliveryState::Refused).await;
    assert_eq!(
        stopped.detail, "consent-withdrawn",
        "the withdrawal stops it"
    );
    expect_refusal(
        "a submission under the withdrawn consent, before the loss",
        submit(
            &mut jc,
            JA,
            &c1_id,
            "",
            certification_request(&lena, "Nachtrag"),
        )
        .await,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );

    restore(&mut h, JC, &archive).await;
    // Control: the restored store knows nothing of it.
    {
        let l = open_offline(&h, JC);
        let c1_held = l.consent(&c1_id).expect("read").expect("held");
        assert!(c1_held.withdrawal.is_none(), "not withdrawn in the backup");
        assert!(
            l.consent(&c2_id).expect("read").is_none(),
            "c2 not in the backup"
        );
        for id in &after {
            assert!(
                l.message(id).expect("read").is_none(),
                "{id} not in the backup"
            );
        }
        let q = l
            .message(&queued)
            .expect("read")
            .expect("queued in the backup");
        assert_eq!(
            q.status.expect("status").state,
            pb::DeliveryState::Queued as i32
        );
    }

    // Norderstedt stays down: the Jugendamt alone gives it all back.
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    let held = wait_for_consent_state(&jc, &c1_id, pb::ConsentState::ConsentWithdrawn).await;
    assert_eq!(
        held.withdrawal.as_ref(),
        Some(&withdrawal),
        "the withdrawal as recorded"
    );
    expect_refusal(
        "a submission under the withdrawn consent, after the restore",
        submit(
            &mut jc,
            JA,
            &c1_id,
            "",
            certification_request(&lena, "Nachtrag"),
        )
        .await,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    let c2_held = wait_for_consent_state(&jc, &c2_id, pb::ConsentState::ConsentInForce).await;
    assert_eq!(
        c2_held.consent.as_ref(),
        Some(&c2_record),
        "the consent as recorded"
    );
    for (id, was) in &sent {
        let now = status(&mut jc, id).await;
        assert_eq!(state_name(now.state), "DELIVERED", "{id}");
        assert_eq!(now.receipt, was.receipt, "{id}: the peer's receipt");
        assert_eq!(
            (&now.recipient, now.kind, &now.consent_id),
            (&was.recipient, was.kind, &was.consent_id),
            "{id}"
        );
    }
    // the message queued under the withdrawn consent is stopped here again
    let stopped = wait_for_state(&jc, &queued, pb::DeliveryState::Refused).await;
    assert_eq!(stopped.detail, "consent-withdrawn");

    // Norderstedt back: it gets the withdrawal (its notice was lost with the store), never
    // the stopped message.
    h.restart(JN).await;
    wait_reconciled(&h, JC).await;
    let jn = h.node(JN).clone();
    let c1_for_jn = c1_id.clone();
    wait_until("Norderstedt holds the withdrawal", || {
        let jn = jn.clone();
        let id = c1_for_jn.clone();
        async move {
            match jn.ledger().consent(&id) {
                Ok(Some(c)) if c.withdrawal.is_some() => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.map(|c| c.withdrawal)))),
            }
        }
    })
    .await;
    assert_eq!(
        h.node(JN)
            .ledger()
            .consent(&c1_id)
            .expect("read")
            .expect("held")
            .withdrawal
            .expect("withdrawn")
            .withdrawn_at_ms,
        withdrawal.withdrawn_at_ms
    );
    assert!(h
        .node(JN)
        .ledger()
        .inbox_record(&queued)
        .expect("read")
        .is_none());

    // Asked again: everything is held, nothing changes.
    let audit_count = |event: AuditEvent| {
        h.node(JC)
            .ledger()
            .audit_entries()
            .expect("chain")
            .into_iter()
            .filter(|e| e.event == event.as_str())
            .count()
    };
    let counts = [
        AuditEvent::ReconciliationWithdrawal,
        AuditEvent::ReconciliationConsent,
        AuditEvent::ReconciliationSent,
    ]
    .map(audit_count);
    assert_eq!(counts[0], 1, "one withdrawal recorded again");
    assert_eq!(counts[1], 1, "one consent recorded again");
    assert!(
        counts[2] >= after.len(),
        "each message sent after the backup"
    );
    let again = jc
        .reconcile(pb::ReconcileRequest {
            peer: JA.into(),
            since_ms: 0,
        })
        .await
        .expect("reconcile")
        .into_inner();
    let r = &again.peers[0];
    assert!(r.error.is_empty(), "{}", r.error);
    assert_eq!(
        r.sent_listed as usize,
        before.len() - 1 + after.len(),
        "{r:?}"
    );
    assert_eq!(
        (
            r.withdrawals_restored,
            r.consents_restored,
            r.messages_restored,
            r.sent_unavailable
        ),
        (0, 0, 0, 0),
        "{r:?}"
    );
    let again_counts = [
        AuditEvent::ReconciliationWithdrawal,
        AuditEvent::ReconciliationConsent,
        AuditEvent::ReconciliationSent,
    ]
    .map(audit_count);
    assert_eq!(again_counts, counts, "nothing recorded twice");
    // Positive control beside the withdrawal: the later consent allows a message.
    let m = submit_ok(
        &mut jc,
        JA,
        &c2_id,
        certification_request(&jonas, "Nachtrag"),
    )
    .await;
    delivered(&h, JC, std::slice::from_ref(&m)).await;

    // The peer's side: only the sender gets its envelopes back.
    let ja_addr = h.fed.config(JA).expect("config").peer_addr;
    let peer_as = |agency: &'static str| {
        let cfg = h.fed.config(agency).expect("config");
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{ja_addr}"))
                .expect("endpoint")
                .tls_config(tls::peer_client_tls(&cfg.tls, JA))
                .expect("tls")
                .connect()
                .await
                .expect("connect");
            PeerExchangeClient::new(channel)
        }
    };
    let list = |limit: u32| pb::ListReceivedRequest {
        since_ms: 0,
        after: String::new(),
        limit,
    };
    let as_jn = peer_as(JN).await.list_received(list(0)).await;
    assert!(
        as_jn.expect("list").into_inner().entries.is_empty(),
        "Norderstedt sent the Jugendamt nothing: it gets nothing of the Jobcenter's"
    );
    let mut as_jc = peer_as(JC).await;
    let own = as_jc
        .list_received(list(0))
        .await
        .expect("list")
        .into_inner();
    assert!(own.next_after.is_empty());
    let ids: Vec<&str> = own.entries.iter().map(|e| e.message_id.as_str()).collect();
    for id in after.iter().chain(std::iter::once(&m)) {
        assert!(ids.contains(&id.as_str()), "{id} handed back to its sender");
    }
    // the notice to Norderstedt is not the Jugendamt's to hand back
    assert_eq!(ids.len(), before.len() - 1 + after.len() + 1, "{ids:?}");
    assert!(own
        .entries
        .iter()
        .all(|e| e.envelope.as_ref().is_some_and(|env| env.signer == JC)));
    // paging: one entry a page, in order, to the end
    let mut paged = Vec::new();
    let mut after_cursor = String::new();
    loop {
        let p = as_jc
            .list_received(pb::ListReceivedRequest {
                since_ms: 0,
                after: after_cursor.clone(),
                limit: 1,
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(p.entries.len() <= 1);
        paged.extend(p.entries.into_iter().map(|e| e.message_id));
        if p.next_after.is_empty() {
            break;
        }
        after_cursor = p.next_after;
    }
    assert_eq!(paged, ids, "the pages hold the listing, once each");
    let s = expect_refusal(
        "257 a page",
        as_jc.list_received(list(257)).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("limit"), "{s:?}");
    let s = expect_refusal(
        "an after this node did not give",
        as_jc
            .list_received(pb::ListReceivedRequest {
                since_ms: 0,
                after: "zz".into(),
                limit: 0,
            })
            .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("after"), "{s:?}");

    // Offline: the chain verifies and holds ids only.
    h.stop(JC).await;
    let l = open_offline(&h, JC);
    l.verify_audit().expect("the chain verifies");
    let entries = events_of(&l);
    let withdrawals: Vec<_> = entries
        .iter()
        .filter(|e| e.event == AuditEvent::ReconciliationWithdrawal.as_str())
        .collect();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(withdrawals[0].consent_id, c1_id);
    assert_eq!(withdrawals[0].peer, JA);
    assert!(entries.iter().all(|e| !e.detail.contains("Lena")
        && !e.detail.contains("Hansen")
        && !e.detail.contains("Jensen")));
}
