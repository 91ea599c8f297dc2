//! A peer down for a long while, from the operator's side (deploy/HANDBOOK.md, "A peer down
//! for a week"): a restart retries at once however far the back-off had grown, and `kurzdraht
//! outbox extend` holds queued messages past their deadline — never past the time the peer
//! would refuse their envelope as too old. Real nodes on manual clocks, the real CLI on the
//! stopped node's store.

use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn jc_node_toml(h: &Harness) -> PathBuf {
    h.fed.dir.join(JC).join("node.toml")
}

/// Runs the CLI; returns stdout, demanding success.
fn kurzdraht(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run kurzdraht");
    assert!(
        out.status.success(),
        "kurzdraht {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A consent at the Jobcenter for `recipients`, known to them (its notices delivered), so
/// that what the test queues next is the only thing in the outbox.
async fn consent_known_to(h: &Harness, family: &str, recipients: &[&str]) -> (pb::Subject, String) {
    let mut jc = h.client(JC).await;
    let s = subject("Lea", family, &birthday_years_ago(19));
    let consent = consent_id(
        &mut jc,
        consent_request(&s, recipients, &[pb::Purpose::U25MoveOut]),
    )
    .await;
    for r in recipients {
        wait_for_consent_state(
            &h.client(r).await,
            &consent,
            pb::ConsentState::ConsentInForce,
        )
        .await;
    }
    (s, consent)
}

/// A certification request queued for each Jugendamt while both are stopped; returns
/// (message to JA, message to JN).
async fn queue_one_for_each(h: &mut Harness) -> (String, String) {
    let (s, consent) = consent_known_to(h, "Outage", &[JA, JN]).await;
    h.stop(JA).await;
    h.stop(JN).await;
    let mut jc = h.client(JC).await;
    let to_ja = submit_ok(&mut jc, JA, &consent, certification_request(&s, "Auszug")).await;
    let to_jn = submit_ok(&mut jc, JN, &consent, certification_request(&s, "Auszug")).await;
    (to_ja, to_jn)
}

/// Waits until the message's delivery was tried and failed at least once.
async fn wait_for_failed_attempt(client: &kurzdraht_client::AgencyClient, id: &str) {
    wait_until(&format!("a failed attempt of {id}"), || {
        let mut c = client.clone();
        async move {
            let s = status(&mut c, id).await;
            match s.attempts {
                0 => Err(format!("{} attempts", s.attempts)),
                _ => Ok(()),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_retries_a_peer_at_once_however_long_the_back_off() {
    let (mut h, _clocks) = start_on_manual_clocks().await;
    // An hour's back-off from the first failure; the clocks stand still, so without the
    // restart the message would never be tried again in this test.
    h.reconfigure(
        JC,
        &[
            ("retry_initial_ms = 250", "retry_initial_ms = 3600000"),
            ("retry_max_ms = 2000", "retry_max_ms = 3600000"),
        ],
    )
    .await;
    let (to_ja, _) = queue_one_for_each(&mut h).await;
    let jc = h.client(JC).await;
    wait_for_failed_attempt(&jc, &to_ja).await;
    h.restart(JA).await;
    // Positive control: the peer is back, but the back-off holds the message.
    assert_stays(
        "the message stays queued during its back-off",
        Duration::from_secs(2),
        || {
            let mut c = jc.clone();
            let id = to_ja.clone();
            async move {
                let s = status(&mut c, &id).await;
                match s.state == pb::DeliveryState::Queued as i32 {
                    true => Ok(()),
                    false => Err(format!("left QUEUED: {}", state_name(s.state))),
                }
            }
        },
    )
    .await;
    h.stop(JC).await;
    h.restart(JC).await;
    let jc = h.client(JC).await;
    let s = wait_for_state(&jc, &to_ja, pb::DeliveryState::Delivered).await;
    assert!(s.attempts >= 2, "delivered on a later attempt: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_extend_holds_a_peers_messages_past_their_deadline() {
    let (mut h, clocks) = start_on_manual_clocks().await;
    // The nodes live six and a half days ago: what they queue now expires half a day after
    // the real now, which the CLI reads.
    for clock in clocks.values() {
        clock.advance(-(6 * DAY_MS + 12 * HOUR_MS));
    }
    let (to_ja, to_jn) = queue_one_for_each(&mut h).await;
    let jc = h.client(JC).await;
    wait_for_failed_attempt(&jc, &to_ja).await;
    wait_for_failed_attempt(&jc, &to_jn).await;
    let submitted = status(&mut jc.clone(), &to_ja).await.submitted_at_ms;
    h.stop(JC).await;

    let config = jc_node_toml(&h);
    let listed = kurzdraht(&[
        "outbox".as_ref(),
        "list".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(listed.contains(&format!("{JA}: 1 queued")), "{listed}");
    assert!(listed.contains(&format!("{JN}: 1 queued")), "{listed}");

    // Held a day from now (half a day more) for the Kreis' Jugendamt only; the city's is the
    // control.
    let out = kurzdraht(&[
        "outbox".as_ref(),
        "extend".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--peer".as_ref(),
        JA.as_ref(),
        "--days".as_ref(),
        "1".as_ref(),
    ]);
    assert!(
        out.contains(&format!("{JA}: 1 queued messages now held until")),
        "{out}"
    );
    assert!(
        !out.contains("too old"),
        "three days are within the replay window: {out}"
    );

    // Seven days and six hours after submission: past the deadline (7 days), before the
    // extension (7.5 days) and the replay window (8 days − 5 min of skew).
    for clock in clocks.values() {
        clock.advance(7 * DAY_MS + 6 * HOUR_MS);
    }
    h.restart(JA).await;
    h.restart(JN).await;
    h.restart(JC).await;
    let jc = h.client(JC).await;
    wait_for_state(&jc, &to_ja, pb::DeliveryState::Delivered).await;
    wait_for_state(&jc, &to_jn, pb::DeliveryState::Expired).await;

    // Asked for more than the replay window allows: held only until the peer's bound.
    let (s, consent) = consent_known_to(&h, "Later", &[JA]).await;
    h.stop(JA).await;
    let mut jc = h.client(JC).await;
    let later = submit_ok(&mut jc, JA, &consent, certification_request(&s, "Auszug")).await;
    let later_submitted = status(&mut jc, &later).await.submitted_at_ms;
    h.stop(JC).await;
    let out = kurzdraht(&[
        "outbox".as_ref(),
        "extend".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--peer".as_ref(),
        JA.as_ref(),
        "--days".as_ref(),
        "30".as_ref(),
    ]);
    assert!(
        out.contains(&format!("{JA}: 1 queued messages now held until"))
            && out.contains("(1 of them only until the peer would refuse them as too old"),
        "{out}"
    );

    // Offline: the deadlines in the store, and the audit chain records both extensions.
    let c = h.fed.config(JC).expect("config");
    let ledger = kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &c.data_key).expect("open");
    let record = ledger.message(&later).expect("read").expect("held");
    assert_eq!(
        record.deadline_ms,
        later_submitted + 8 * DAY_MS - 5 * 60_000
    );
    let first = ledger.message(&to_ja).expect("read").expect("held");
    assert!(first.deadline_ms > submitted + 7 * DAY_MS, "{first:?}");
    let extensions = ledger
        .audit_entries()
        .expect("audit")
        .into_iter()
        .filter(|e| e.event == "message.deadline-extended")
        .count();
    assert_eq!(extensions, 2);
    ledger.verify_audit().expect("the chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_is_renewed_until_the_peer_learns_of_it() {
    let (mut h, clocks) = start_on_manual_clocks().await;
    let (_, consent) = consent_known_to(&h, "Withdrawn", &[JA]).await;
    h.stop(JA).await;
    let mut jc = h.client(JC).await;
    let answer = jc
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
            recorded_by: "Herr Jensen".into(),
            manner: "schriftlich".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    let first = answer
        .notice_message_ids
        .first()
        .expect("a notice for JA")
        .clone();
    wait_for_failed_attempt(&jc, &first).await;

    // Past the delivery deadline: the notice expires, and the same withdrawal is queued
    // again in an envelope made now.
    for clock in clocks.values() {
        clock.advance(7 * DAY_MS + HOUR_MS);
    }
    h.node(JC).wake_all();
    let expired = wait_for_state(&jc, &first, pb::DeliveryState::Expired).await;
    let renewal = expired
        .detail
        .strip_prefix("deadline passed; renewed as ")
        .unwrap_or_else(|| panic!("renewed: {expired:?}"))
        .to_string();
    let queued = status(&mut jc, &renewal).await;
    assert_eq!(queued.kind, pb::MessageKind::ConsentWithdrawal as i32);
    assert_eq!(queued.consent_id, consent);

    // The peer comes back and learns of the withdrawal from the renewed notice.
    h.restart(JA).await;
    h.stop(JC).await;
    h.restart(JC).await;
    let jc = h.client(JC).await;
    wait_for_state(&jc, &renewal, pb::DeliveryState::Delivered).await;
    wait_for_consent_state(
        &h.client(JA).await,
        &consent,
        pb::ConsentState::ConsentWithdrawn,
    )
    .await;
}
