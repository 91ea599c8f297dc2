//! One flooding peer does not starve the others: each peer has its own request rate and
//! concurrency limit at the receiver; over them is RESOURCE_EXHAUSTED.

use kurzdraht_node::error::reason_of;
use kurzdraht_proto::v1::{self as pb, peer_exchange_client::PeerExchangeClient};
use kurzdraht_testkit::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_limited_and_the_others_get_through() {
    let mut h = start().await;
    // The Kreis office allows 20 deliveries per second and 4 in flight per peer.
    h.reconfigure(
        JA,
        &[(
            "clock_skew_secs = 300
",
            "clock_skew_secs = 300
peer_requests_per_second = 20
peer_concurrent_requests = 4
",
        )],
    )
    .await;

    // The Jobcenter's node floods the Kreis office from 8 tasks over one connection.
    let jc = h.fed.config(JC).unwrap();
    let ja = h.fed.config(JA).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", ja.peer_addr))
        .unwrap()
        .tls_config(kurzdraht_node::tls::peer_client_tls(&jc.tls, JA))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let exhausted = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    // The flood goes on until Norderstedt's notice is through (at most 20 s).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(20);
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let mut client = PeerExchangeClient::new(channel.clone());
            let (exhausted, other, stop) = (exhausted.clone(), other.clone(), stop.clone());
            tokio::spawn(async move {
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    let junk = pb::SignedEnvelope {
                        header: vec![1; 64],
                        payload: vec![2; 64],
                        signature: vec![3; 64],
                        signer: JC.into(),
                    };
                    match client.deliver(junk).await {
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            assert_eq!(reason_of(&s), Some("rate-limited"));
                            exhausted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    // Meanwhile Norderstedt replicates a consent to the Kreis office, and it arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut jn = h.client(JN).await;
    let mut req = consent_request(
        &subject("Mia", "Carstens", "2006-02-03"),
        &[JA],
        &[pb::Purpose::U25MoveOut],
    );
    req.recorded_by = "Herr Ohlsen".into();
    let recorded = record_consent(&mut jn, req).await;
    let notice = recorded.notice_message_ids[0].clone();
    wait_for_state(&jn, &notice, pb::DeliveryState::Delivered).await;
    let exhausted_before_through = exhausted.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }
    let (exhausted, other) = (
        exhausted.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    assert!(
        exhausted > 0,
        "the flood was never limited ({other} answered)"
    );
    assert!(
        exhausted_before_through > 0,
        "Norderstedt got through, but only before the flood was being limited"
    );
    assert!(
        other < exhausted,
        "most of the flood should be turned away: {other} answered, {exhausted} limited"
    );
}
