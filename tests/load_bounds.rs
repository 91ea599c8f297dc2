//! What a peer or an IT system can hold open on a node is bounded (`[limits]`,
//! `crates/node/src/rpc/connection_limits.rs`), and a flood stays within those bounds:
//!
//! 1. both ports refuse HTTP/2 streams beyond their bound (`REFUSED_STREAM`) and header
//!    blocks over `max_header_list_bytes`, and say so in their SETTINGS;
//! 2. a connection that stops answering pings is closed, and a call whose request never
//!    completes is ended after its port's request timeout;
//! 3. a peer over its concurrency cap is answered before its request body is read;
//! 4. calls with a federation certificate naming no agency are audited a few times per
//!    remote address, then once a minute, and counted in the metrics always; an IT system
//!    re-reading its inbox and a peer redelivering what it delivered are audited once per
//!    item and client, once per message — the audit records decisions, not repetitions;
//! 5. full-store work — an erasure, a metrics scrape counting the
//!    outbox — runs off the async threads: with such a scan held, the node (on a runtime of
//!    one thread) still delivers;
//! 6. a real flood — a peer with a valid certificate opening thousands of streams, each
//!    trickling an almost-1-MiB request it never finishes — keeps the flooded node (a
//!    separate `kurzdraht serve` process) within a memory bound derived from its limits,
//!    while another peer's messages are delivered meanwhile. It prints the peak RSS:
//!    `cargo test -p kurzdraht-tests --test load_bounds -- --nocapture flood`.

use bytes::Bytes;
use futures_util::FutureExt;
use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_node::config::TlsMaterial;
use kurzdraht_node::error::reason_of;
use kurzdraht_node::pki;
use kurzdraht_node::rpc::peer_limits::{AUDIT_BURST, AUDIT_EVERY_MS};
use kurzdraht_proto::v1::{self as pb, peer_exchange_client::PeerExchangeClient};
use kurzdraht_testkit::raw_h2::{self, RawH2, REFUSED_STREAM};
use kurzdraht_testkit::*;
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const DELIVER: &str = "/kurzdraht.v1.PeerExchange/Deliver";
const LIST_CONSENTS: &str = "/kurzdraht.v1.AgencyApi/ListConsents";

/// The `[limits]` section of `agency`'s node.toml gets `lines` added.
async fn with_limits(h: &mut Harness, agency: &str, lines: &str) {
    h.reconfigure(agency, &[("[limits]\n", &format!("[limits]\n{lines}"))])
        .await;
}

fn tls_of(h: &Harness, agency: &str) -> TlsMaterial {
    h.fed.config(agency).unwrap().tls
}

async fn raw_api(h: &Harness, agency: &str, answer_pings: bool) -> RawH2 {
    let cfg = h.fed.config(agency).unwrap();
    let tls = raw_h2::tls_connect(
        cfg.api_addr,
        raw_h2::api_client_config(&cfg.tls.ca_pem),
        agency,
    )
    .await
    .expect("TLS to the AgencyApi");
    RawH2::start(tls, answer_pings).await
}

/// A raw connection to `to`'s PeerExchange port with `from`'s certificate.
async fn raw_peer(h: &Harness, from: &str, to: &str, answer_pings: bool) -> RawH2 {
    let addr = h.fed.config(to).unwrap().peer_addr;
    let tls = raw_h2::tls_connect(addr, raw_h2::peer_client_config(&tls_of(h, from)), to)
        .await
        .expect("TLS to the PeerExchange port");
    RawH2::start(tls, answer_pings).await
}

fn bearer(h: &Harness, agency: &str) -> String {
    format!("Bearer {}", h.token(agency))
}

/// 1. Streams beyond the bound are refused by the transport, on both ports; a header block
/// over the bound is answered 431 while one within it is served (the same connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ports_refuse_streams_and_headers_beyond_their_bounds() {
    let mut h = start().await;
    with_limits(
        &mut h,
        JA,
        "api_streams_per_connection = 8\napi_concurrent_requests_per_connection = 4\n\
         peer_streams_per_connection = 6\nmax_header_list_bytes = 4096\n",
    )
    .await;
    let token = bearer(&h, JA);

    // The AgencyApi: 20 calls opened at once, each waiting for a body that never comes.
    let mut api = raw_api(&h, JA, true).await;
    assert_eq!(api.seen(|s| s.max_concurrent_streams), Some(8));
    assert_eq!(api.seen(|s| s.max_header_list_size), Some(4096));
    let block = raw_h2::grpc_request(LIST_CONSENTS, JA, &[("authorization", &token)]);
    let ids = api.open_many(20, &block).await.unwrap();
    api.wait_for("12 refused streams", |s| s.resets(REFUSED_STREAM) == 12)
        .await;
    api.seen(|s| {
        let refused: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| s.streams.get(id).and_then(|st| st.reset) == Some(REFUSED_STREAM))
            .collect();
        assert_eq!(
            refused,
            ids[8..],
            "the streams after the eighth are refused"
        );
    });

    // A fresh connection: a call within the header bound is served, one over it is not.
    let mut api = raw_api(&h, JA, true).await;
    let ok = api.open(&block).await.unwrap();
    api.grpc_message(ok, &[]).await.unwrap();
    api.wait_for("the answer to ListConsents", |s| {
        s.streams.get(&ok).is_some_and(|st| st.ended)
    })
    .await;
    assert_eq!(
        api.seen(|s| s.streams[&ok].header_blocks[0]),
        0x88,
        ":status 200"
    );
    let padding = "x".repeat(5000);
    let big = raw_h2::grpc_request(
        LIST_CONSENTS,
        JA,
        &[("authorization", &token), ("x-padding", &padding)],
    );
    let over = api.open(&big).await.unwrap();
    api.wait_for("the answer to the oversized header block", |s| {
        s.streams
            .get(&over)
            .is_some_and(|st| st.ended || st.reset.is_some())
    })
    .await;
    let seen = api.seen(|s| s.streams[&over].clone());
    assert!(
        seen.header_blocks.first() != Some(&0x88),
        "an oversized header block is not served: {seen:?}"
    );

    // The PeerExchange port, with the Jobcenter's certificate.
    let mut peer = raw_peer(&h, JC, JA, true).await;
    assert_eq!(peer.seen(|s| s.max_concurrent_streams), Some(6));
    let block = raw_h2::grpc_request(DELIVER, JA, &[]);
    peer.open_many(10, &block).await.unwrap();
    peer.wait_for("4 refused streams", |s| s.resets(REFUSED_STREAM) == 4)
        .await;
    // The AgencyApi of the node still answers its IT system.
    list_consents(&mut h.client(JA).await).await;
}

/// 2. A connection whose pings go unanswered is closed, one that answers stays; a call
/// whose request body never completes is ended after the request timeout, on either port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_stall_are_cut_off() {
    let mut h = start().await;
    with_limits(
        &mut h,
        JA,
        "keepalive_interval_secs = 1\nkeepalive_timeout_secs = 1\n\
         api_request_timeout_secs = 2\npeer_request_timeout_secs = 2\n",
    )
    .await;
    let token = bearer(&h, JA);
    let mut answering = raw_api(&h, JA, true).await;
    let silent = raw_api(&h, JA, false).await;
    silent
        .wait_for("the silent connection to be closed", |s| s.closed)
        .await;
    assert!(silent.seen(|s| s.pings_received) >= 1, "it was pinged");
    answering
        .wait_for("a second ping on the answering connection", |s| {
            s.pings_received >= 2
        })
        .await;
    assert!(
        !answering.seen(|s| s.closed),
        "a connection that answers its pings stays open"
    );

    // A call that never sends its body: ended by the node, on the open connection.
    let block = raw_h2::grpc_request(LIST_CONSENTS, JA, &[("authorization", &token)]);
    let stalled = answering.open(&block).await.unwrap();
    answering
        .wait_for("the stalled AgencyApi call to be ended", |s| {
            s.streams.get(&stalled).is_some_and(|st| st.ended)
        })
        .await;
    let mut peer = raw_peer(&h, JC, JA, true).await;
    let stalled = peer
        .open(&raw_h2::grpc_request(DELIVER, JA, &[]))
        .await
        .unwrap();
    peer.wait_for("the stalled Deliver call to be ended", |s| {
        s.streams.get(&stalled).is_some_and(|st| st.ended)
    })
    .await;
    assert!(!answering.seen(|s| s.closed) && !peer.seen(|s| s.closed));
    list_consents(&mut h.client(JA).await).await;
}

async fn list_consents(client: &mut AgencyClient) {
    client
        .list_consents(pb::ListConsentsRequest::default())
        .await
        .expect("ListConsents");
}

// ---- an h2 client (a peer following the protocol, abusing it) ----

async fn h2_peer(addr: std::net::SocketAddr, tls: &TlsMaterial) -> h2::client::SendRequest<Bytes> {
    let stream = raw_h2::tls_connect(addr, raw_h2::peer_client_config(tls), JA)
        .await
        .expect("TLS to the PeerExchange port");
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn deliver_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("https://{JA}{DELIVER}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The gRPC status code and reason of a trailers-only answer.
fn status_of<B>(response: &http::Response<B>) -> (Option<i32>, Option<String>) {
    let get = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    (
        get("grpc-status").and_then(|c| c.parse().ok()),
        get("kurzdraht-reason"),
    )
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    Bytes::from(body)
}

/// 3. A peer's requests count against its cap from their headers on: two calls whose bodies
/// never come are counted in flight by the node; the next is answered at once
/// (RESOURCE_EXHAUSTED, rate-limited) without the node reading it and takes no slot; once a
/// held call is cancelled and its slot given back, a whole call goes through to reception.
///
/// The third call is sent only once the node counts the first two: calls whose headers
/// arrive together are admitted in the order their stream tasks run, not in stream order
/// (see `peer_exchange::Admitted`), so which of them would be turned away is not defined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_cap_is_answered_before_its_body_is_read() {
    let mut h = start().await;
    with_limits(&mut h, JA, "peer_concurrent_requests = 2\n").await;
    let addr = h.fed.config(JA).unwrap().peer_addr;
    let mut jc = h2_peer(addr, &tls_of(&h, JC)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        jc = jc.ready().await.unwrap();
        held.push(jc.send_request(deliver_request(), false).unwrap());
    }
    until_in_flight(&h, JC, 2).await;

    jc = jc.ready().await.unwrap();
    let (response, _body) = jc.send_request(deliver_request(), false).unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .expect("the third call is answered without its body")
        .unwrap();
    assert_eq!(
        status_of(&response),
        (
            Some(Code::ResourceExhausted as i32),
            Some("rate-limited".into())
        )
    );
    assert_eq!(
        h.node(JA).peer_limits().in_flight(JC),
        2,
        "the refused call took no slot"
    );
    for (response, _) in &mut held {
        assert!(
            response.now_or_never().is_none(),
            "a held call is not answered while its body is missing"
        );
    }

    // Cancel one held call: its slot is given back, and a whole call is let in and decided
    // by reception.
    drop(held.pop());
    until_in_flight(&h, JC, 1).await;
    let junk = pb::SignedEnvelope {
        header: vec![1; 64],
        payload: vec![2; 64],
        signature: vec![3; 64],
        signer: JC.into(),
    };
    jc = jc.ready().await.unwrap();
    let (response, mut body) = jc.send_request(deliver_request(), false).unwrap();
    body.send_data(grpc_frame(&junk.encode_to_vec()), true)
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .expect("the call let in is answered")
        .unwrap();
    assert_eq!(
        final_status(response).await,
        (
            Some(Code::Unauthenticated as i32),
            Some("bad-signature".into())
        ),
        "decided by reception"
    );
    until_in_flight(&h, JC, 1).await;
}

/// Waits until `JA` counts `n` calls of `agency` in flight on its PeerExchange port.
async fn until_in_flight(h: &Harness, agency: &str, n: usize) {
    wait_until(
        &format!("{JA} counts {n} calls of {agency} in flight"),
        || async {
            match h.node(JA).peer_limits().in_flight(agency) {
                seen if seen == n => Ok(()),
                seen => Err(format!("{seen} in flight")),
            }
        },
    )
    .await
}

/// The gRPC status code and reason of an answer: from its headers if it is trailers-only,
/// else from its trailers (after reading its messages).
async fn final_status(response: http::Response<h2::RecvStream>) -> (Option<i32>, Option<String>) {
    let status = status_of(&response);
    if status.0.is_some() {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the answer's body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body
        .trailers()
        .await
        .expect("the answer's trailers")
        .unwrap_or_default();
    let get = |name: &str| {
        trailers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    (
        get("grpc-status").and_then(|c| c.parse().ok()),
        get("kurzdraht-reason"),
    )
}

/// 4. A certificate of the federation CA that names no agency: every call is refused and
/// counted, but only the first few per remote address are audited, then one a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_an_agency_are_audited_within_an_allowance() {
    let (h, clocks) = start_on_manual_clocks().await;
    let ja = h.fed.config(JA).unwrap();
    let ca_key = std::fs::read_to_string(h.fed.dir.join("ca.key")).unwrap();
    let ca_cert = std::fs::read_to_string(h.fed.dir.join("ca.pem")).unwrap();
    let (request, key) = pki::tls_request("mallory-agency", "Mallory").unwrap();
    let cert = pki::sign_request(&ca_cert, &ca_key, &request, "mallory-agency", 30).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", ja.peer_addr))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ja.tls.ca_pem))
                .identity(Identity::from_pem(cert, key))
                .domain_name(JA),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut mallory = PeerExchangeClient::new(channel);
    let call = |mut client: PeerExchangeClient<tonic::transport::Channel>| async move {
        let status = client
            .deliver(pb::SignedEnvelope::default())
            .await
            .expect_err("no agency");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason_of(&status), Some("permission-denied"));
    };
    let audited = |h: &Harness| {
        h.node(JA)
            .ledger()
            .audit_entries()
            .unwrap()
            .iter()
            .filter(|e| e.event == "inbox.refused" && e.detail == "permission-denied")
            .count()
    };
    let counted = |h: &Harness| {
        let text = kurzdraht_node::metrics::render_node(h.node(JA));
        text.lines()
            .find_map(|l| l.strip_prefix("kurzdraht_refusals_total{reason=\"permission-denied\"} "))
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    for _ in 0..20 {
        call(mallory.clone()).await;
    }
    assert_eq!(
        audited(&h),
        AUDIT_BURST as usize,
        "the first few are audited"
    );
    assert_eq!(counted(&h), 20, "every refusal is counted");
    // A minute later one more is audited.
    clocks[JA].advance(AUDIT_EVERY_MS);
    for _ in 0..3 {
        call(mallory.clone()).await;
    }
    assert_eq!(audited(&h), AUDIT_BURST as usize + 1);
    assert_eq!(counted(&h), 23);
    let _ = &mut mallory;
}

fn counter(h: &Harness, agency: &str, line: &str) -> u64 {
    kurzdraht_node::metrics::render_node(h.node(agency))
        .lines()
        .find_map(|l| l.strip_prefix(line).and_then(|n| n.strip_prefix(' ')))
        .map_or(0, |n| n.parse().unwrap())
}

fn audited(h: &Harness, agency: &str, event: &str) -> Vec<String> {
    h.node(agency)
        .ledger()
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .map(|e| format!("{} {}", e.message_id, e.detail))
        .collect()
}

/// 4. An IT system that reads its inbox from the start again and again, and a peer that
/// redelivers what it delivered: every read and every redelivery is answered, but the
/// audit chain gets one `inbox.read` per item and IT system, one `inbox.duplicate` per
/// message; the redeliveries are counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rereads_and_redeliveries_are_audited_once() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(19));
    let consent = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let first = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Antrag"),
    )
    .await;
    wait_for_state(&jc, &first, pb::DeliveryState::Delivered).await;
    let items = wait_for_inbox_len(&ja, 2).await;
    for _ in 0..5 {
        assert_eq!(
            ids(&read_inbox(&mut ja, 0).await),
            ids(&items),
            "every read"
        );
    }
    let client = format!("client {JA}-it");
    let mut expected: Vec<String> = items
        .iter()
        .map(|i| format!("{} {client}", i.message_id))
        .collect();
    assert_eq!(
        audited(&h, JA, "inbox.read"),
        expected,
        "one entry per item"
    );
    // A new item is audited at its first read.
    let second = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Nachtrag"),
    )
    .await;
    wait_for_state(&jc, &second, pb::DeliveryState::Delivered).await;
    for _ in 0..3 {
        read_inbox(&mut ja, 0).await;
    }
    expected.push(format!("{second} {client}"));
    assert_eq!(audited(&h, JA, "inbox.read"), expected);

    // The Jobcenter redelivers its first message: four times alone, twice in one batch.
    let envelope = items
        .iter()
        .find(|i| i.message_id == first)
        .and_then(|i| i.envelope.clone())
        .expect("the envelope as received");
    let ja_cfg = h.fed.config(JA).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", ja_cfg.peer_addr))
        .unwrap()
        .tls_config(kurzdraht_node::tls::peer_client_tls(&tls_of(&h, JC), JA))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut peer = PeerExchangeClient::new(channel);
    assert!(audited(&h, JA, "inbox.duplicate").is_empty());
    let original = peer.deliver(envelope.clone()).await.unwrap().into_inner();
    for _ in 0..3 {
        let again = peer.deliver(envelope.clone()).await.unwrap().into_inner();
        assert_eq!(again, original, "the original receipt");
    }
    let batch = peer
        .deliver_batch(pb::EnvelopeBatch {
            envelopes: vec![envelope.clone(), envelope.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.outcomes.len(), 2);
    for o in &batch.outcomes {
        assert_eq!(
            o.outcome,
            Some(pb::delivery_outcome::Outcome::Receipt(original.clone()))
        );
    }
    assert_eq!(
        audited(&h, JA, "inbox.duplicate"),
        [format!("{first} ")],
        "one inbox.duplicate for six redeliveries"
    );
    assert_eq!(counter(&h, JA, "kurzdraht_duplicates_total"), 6);
    assert_eq!(
        audited(&h, JA, "inbox.received").len(),
        3,
        "nothing stored twice"
    );
}

/// One raw HTTP/1.1 GET; the status line.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// 5. Work that reads the whole store runs on blocking threads. The three nodes share
/// this test's runtime of ONE thread; the Jobcenter's next full scan is held (as a store
/// of a million records would hold it) while the Jobcenter delivers a message to the
/// Jugendamt, for each of: an erasure, a metrics scrape. Had the scan
/// run on the async thread, nothing would run until a watchdog thread let it go.
#[tokio::test(flavor = "current_thread")]
async fn full_store_work_leaves_the_async_threads_to_delivery() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", &birthday_years_ago(19));
    let mia = subject("Mia", "Carstens", &birthday_years_ago(20));
    let consent = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    consent_id(
        &mut jc,
        consent_request(&mia, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let metrics = h.fed.config(JC).unwrap().metrics_addr.expect("metrics");
    let person = |s: &pb::Subject| pb::SubjectAccessRequest {
        given_name: s.given_name.clone(),
        family_name: s.family_name.clone(),
        date_of_birth: s.date_of_birth.clone(),
    };
    // (The access report was such work until it read a person's records by the ledger's
    // person, case and refusal indexes; it still runs on a blocking thread.)
    for work in ["erasure", "metrics scrape"] {
        let mut pause = h.node(JC).ledger().pause_next_scan();
        let release = pause.releaser();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let stalled = stalled.clone();
            std::thread::spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(Duration::from_secs(20))
                {
                    stalled.store(true, Ordering::SeqCst);
                    release();
                }
            })
        };
        let mut client = jc.clone();
        let mia_req = person(&mia);
        let job = tokio::spawn(async move {
            match work {
                "erasure" => client
                    .erase_subject(mia_req)
                    .await
                    .map(|r| format!("{} consents erased", r.into_inner().consent_ids.len())),
                _ => Ok(http_get(metrics, "/metrics").await),
            }
        });
        assert!(pause.reached().await, "{work}: its scan began");
        // The scan is held: the node still accepts and delivers a message.
        let message = submit_ok(&mut jc, JA, &consent, certification_request(&lena, work)).await;
        wait_for_state(&jc, &message, pb::DeliveryState::Delivered).await;
        let _ = done.send(());
        watchdog.join().unwrap();
        assert!(
            !stalled.load(Ordering::SeqCst),
            "{work}: its scan held the node's only async thread until the watchdog let it go"
        );
        assert!(
            !job.is_finished(),
            "{work}: still held in its scan meanwhile"
        );
        pause.release();
        let outcome = job
            .await
            .unwrap()
            .unwrap_or_else(|s| panic!("{work}: {s:?}"));
        println!("{work}: {outcome}");
        match work {
            "erasure" => assert_eq!(outcome, "1 consents erased"),
            _ => assert_eq!(outcome, "HTTP/1.1 200 OK"),
        }
    }
}

// ---- 6. the flood, against a node in its own process ----

/// One `kurzdraht serve` process at log level info, killed when dropped (its log printed
/// during a panic), its log beside its node.toml.
fn serve(name: &str, config: &Path) -> ServeProcess {
    ServeProcess::spawn_logging(
        name,
        config,
        config.with_file_name("node.log"),
        Some("info"),
    )
    .expect("start kurzdraht serve")
}

/// VmHWM (peak) and VmRSS of a serve process, in bytes.
fn memory(node: &ServeProcess) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid()))
        .expect("/proc/<pid>/status");
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc status"))
            * 1024
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

async fn ready(config: &ClientConfig) -> AgencyClient {
    wait_until("the node's AgencyApi answers", || async {
        let mut c = connect(config).await.map_err(|e| e.to_string())?;
        c.list_consents(pb::ListConsentsRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(c)
    })
    .await
}

const MIB: f64 = 1024.0 * 1024.0;

/// What the flood saw, per outcome.
#[derive(Default)]
struct FloodStats {
    /// Streams opened (requests sent).
    attempted: AtomicUsize,
    /// Streams sending their body now: the node let them onto the wire (granted
    /// flow-control capacity), and they are neither answered nor done sending. The others
    /// are answered, or hold their body, or wait in the client for the node to allow more
    /// streams.
    sending: AtomicUsize,
    /// Streams whose whole (almost 1 MiB) body is sent and still unanswered.
    held: AtomicUsize,
    /// Streams that ended: by gRPC status and reason, or by the h2 error.
    ended: Mutex<BTreeMap<String, usize>>,
    /// Connections the flood opened.
    connections: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl FloodStats {
    fn end(&self, how: String) {
        *self.ended.lock().unwrap().entry(how).or_default() += 1;
        self.changed.notify_waiters();
    }
    fn ended(&self) -> usize {
        self.ended.lock().unwrap().values().sum()
    }
}

/// The flood's shape: `CONNECTIONS` connections at once, each with up to
/// `STREAMS_PER_CONNECTION` streams (as many as the node allows on the wire, the rest
/// waiting in the client), `TOTAL` streams in all, each trickling `BODY` bytes of a
/// request announced as `BODY + 1` bytes long, in 16 KiB pieces.
const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 128;
const TOTAL: usize = 4096;
const BODY: usize = 1_000_000;
const PIECE: usize = 16 * 1024;

/// One flooding stream: sends the body piece by piece, never finishing; ends when the node
/// answers (or resets it).
async fn flood_stream(
    response: h2::client::ResponseFuture,
    mut body: h2::SendStream<Bytes>,
    stats: Arc<FloodStats>,
) {
    let holds = std::sync::atomic::AtomicBool::new(false);
    let sends = std::sync::atomic::AtomicBool::new(false);
    let send = async {
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&(BODY as u32 + 1).to_be_bytes());
        if body.send_data(Bytes::from(prefix), false).is_err() {
            return;
        }
        let piece = Bytes::from(vec![0x5a; PIECE]);
        let mut sent = 0;
        while sent < BODY {
            let want = PIECE.min(BODY - sent);
            body.reserve_capacity(want);
            let granted = match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) => n.min(want),
                _ => return,
            };
            if sent == 0 {
                sends.store(true, Ordering::SeqCst);
                stats.sending.fetch_add(1, Ordering::SeqCst);
            }
            if body.send_data(piece.slice(..granted), false).is_err() {
                return;
            }
            sent += granted;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        holds.store(true, Ordering::SeqCst);
        stats.held.fetch_add(1, Ordering::SeqCst);
        if sends.swap(false, Ordering::SeqCst) {
            stats.sending.fetch_sub(1, Ordering::SeqCst);
        }
        stats.changed.notify_waiters();
        std::future::pending::<()>().await;
    };
    let mut response = response;
    let answer = tokio::select! {
        answer = &mut response => answer,
        // The body could not be sent on (the stream or the connection ended): its end.
        _ = send => response.await,
    };
    if holds.load(Ordering::SeqCst) {
        stats.held.fetch_sub(1, Ordering::SeqCst);
    }
    if sends.swap(false, Ordering::SeqCst) {
        stats.sending.fetch_sub(1, Ordering::SeqCst);
    }
    let how = match answer {
        Ok(r) => {
            let (code, reason) = status_of(&r);
            format!(
                "grpc-status {} {}",
                code.map_or("-".into(), |c| c.to_string()),
                reason.unwrap_or_default()
            )
        }
        Err(e) => format!(
            "h2 {}",
            e.reason()
                .map_or_else(|| e.to_string(), |r| format!("{r:?}"))
        ),
    };
    stats.end(how);
}

/// One flooding connection after the other (a connection the node closes is replaced),
/// until `budget` streams have been opened.
async fn flood_connections(
    addr: std::net::SocketAddr,
    tls: TlsMaterial,
    budget: Arc<AtomicUsize>,
    stats: Arc<FloodStats>,
) {
    while budget.load(Ordering::SeqCst) > 0 {
        let Ok(stream) = raw_h2::tls_connect(addr, raw_h2::peer_client_config(&tls), JA).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok((client, connection)) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, Bytes>(stream)
            .await
        else {
            continue;
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let closed = tokio::spawn(connection);
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        loop {
            let slot = slots.clone().acquire_owned().await.unwrap();
            if budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_err()
            {
                // Hold the connection (and the streams on it) until the test ends.
                let _ = closed.await;
                return;
            }
            // A fresh handle for each stream: h2 queues the streams the node does not allow
            // yet (at most this connection's slots), instead of waiting for each in turn.
            let client = match client.clone().ready().await {
                Ok(c) => c,
                Err(_) => {
                    budget.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            };
            let mut client = client;
            let Ok((response, body)) = client.send_request(deliver_request(), false) else {
                budget.fetch_add(1, Ordering::SeqCst);
                break;
            };
            stats.attempted.fetch_add(1, Ordering::SeqCst);
            let stats = stats.clone();
            tokio::spawn(async move {
                flood_stream(response, body, stats).await;
                drop(slot);
            });
        }
    }
}

/// 6. The flood. The Jugendamt Kreis Segeberg (its own process) allows each peer 4 calls
/// at once, 16 streams per connection, 16 connections. Norderstedt's certificate floods
/// it; meanwhile the Jobcenter's message is delivered; the Jugendamt's peak RSS grows by
/// no more than what its limits let a peer hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_streams_keeps_the_node_within_its_memory_bound() {
    const CONCURRENT: usize = 4;
    const CONNECTIONS_ALLOWED: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("federation");
    let a = free_addrs(6);
    let files = pki::init(
        &root,
        &pki::segeberg([(a[0], a[1]), (a[2], a[3]), (a[4], a[5])]),
    )
    .expect("pki init");
    let toml_of = |agency: &str| {
        files
            .iter()
            .find(|f| f.id == agency)
            .unwrap()
            .node_config
            .clone()
    };
    let ja_toml = toml_of(JA);
    let text = std::fs::read_to_string(&ja_toml).unwrap().replace(
        "[limits]\n",
        &format!(
            "[limits]\npeer_concurrent_requests = {CONCURRENT}\npeer_streams_per_connection = 16\n\
             peer_connections = {CONNECTIONS_ALLOWED}\npeer_request_timeout_secs = 600\n"
        ),
    );
    std::fs::write(&ja_toml, text).unwrap();
    let ja_config = kurzdraht_node::config::NodeConfig::load(&ja_toml).unwrap();
    let client_of =
        |agency: &str| ClientConfig::load(&root.join(agency).join("client.toml")).unwrap();

    let ja = serve(JA, &ja_toml);
    let jc = serve(JC, &toml_of(JC));
    let mut ja_api = ready(&client_of(JA)).await;
    let mut jc_api = ready(&client_of(JC)).await;

    // Warm-up: a consent and a message from the Jobcenter, delivered.
    let lena = subject("Lena", "Hansen", &birthday_years_ago(19));
    let consent = consent_id(
        &mut jc_api,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let first = submit_ok(
        &mut jc_api,
        JA,
        &consent,
        certification_request(&lena, "Antrag"),
    )
    .await;
    wait_for_state(&jc_api, &first, pb::DeliveryState::Delivered).await;
    list_consents(&mut ja_api).await;
    let (baseline, baseline_rss) = memory(&ja);

    // The flood, with Norderstedt's valid certificate.
    let norderstedt = kurzdraht_node::config::NodeConfig::load(&toml_of(JN))
        .unwrap()
        .tls;
    let stats = Arc::new(FloodStats::default());
    let budget = Arc::new(AtomicUsize::new(TOTAL));
    let flood: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(flood_connections(
                ja_config.peer_addr,
                norderstedt.clone(),
                budget.clone(),
                stats.clone(),
            ))
        })
        .collect();
    // Until the flood is all out: every stream opened (or every slot of every connection
    // taken by an unanswered one), and each either answered, or holding its whole body, or
    // waiting in the client for the node to allow another stream.
    let started = std::time::Instant::now();
    loop {
        let notified = stats.changed.notified();
        let (attempted, sending, held, ended) = (
            stats.attempted.load(Ordering::SeqCst),
            stats.sending.load(Ordering::SeqCst),
            stats.held.load(Ordering::SeqCst),
            stats.ended(),
        );
        let all_opened =
            attempted == TOTAL || attempted - ended == CONNECTIONS * STREAMS_PER_CONNECTION;
        if all_opened && sending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood did not settle: {attempted} opened, {sending} sending, {held} held, \
             {ended} ended over {} connections: {:?}",
            stats.connections.load(Ordering::SeqCst),
            stats.ended.lock().unwrap()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }

    // Meanwhile the Jobcenter's next message goes through.
    let second = submit_ok(
        &mut jc_api,
        JA,
        &consent,
        certification_request(&lena, "Nachtrag"),
    )
    .await;
    wait_for_state(&jc_api, &second, pb::DeliveryState::Delivered).await;
    let (peak, rss) = memory(&ja);

    let attempted = stats.attempted.load(Ordering::SeqCst);
    let held = stats.held.load(Ordering::SeqCst);
    let ended = stats.ended.lock().unwrap().clone();
    let transport_limit =
        kurzdraht_node::rpc::peer_exchange::transport_limit(&ja_config.limits.envelope) as f64;
    // What the limits let one peer make the node hold: its calls at once, each at most
    // the transport limit (buffered, then decoded: twice), plus per connection the
    // HTTP/2 flow-control window (1 MiB) of data received but not yet read, plus 16 MiB
    // for the allocator and the runtime.
    let bound =
        CONCURRENT as f64 * transport_limit * 2.0 + CONNECTIONS_ALLOWED as f64 * MIB + 16.0 * MIB;
    println!(
        "flood: {attempted} streams opened over {} connections, {held} holding an almost-1-MiB \
         body unanswered; ended: {ended:?}",
        stats.connections.load(Ordering::SeqCst)
    );
    println!(
        "peak RSS of the flooded node (VmHWM): {:.1} MiB; before the flood {:.1} MiB \
         (VmRSS {:.1} MiB, now {:.1} MiB); growth {:.1} MiB, bound {:.1} MiB; the \
         Jobcenter's message {second} was DELIVERED meanwhile",
        peak as f64 / MIB,
        baseline as f64 / MIB,
        baseline_rss as f64 / MIB,
        rss as f64 / MIB,
        (peak - baseline) as f64 / MIB,
        bound / MIB,
    );
    assert!(
        attempted >= 1000,
        "a flood of thousands of streams: {attempted}"
    );
    assert!(
        held <= CONCURRENT,
        "at most the peer's cap of calls holds a body: {held}"
    );
    let refused_at_once = ended
        .iter()
        .filter(|(how, _)| how.as_str() == "grpc-status 8 rate-limited")
        .map(|(_, n)| n)
        .sum::<usize>();
    assert!(
        refused_at_once >= attempted / 2,
        "the streams over the cap are answered RESOURCE_EXHAUSTED rate-limited: {ended:?}"
    );
    assert!(
        ((peak - baseline) as f64) <= bound,
        "the flood grew the node's peak RSS by {:.1} MiB, over the bound of {:.1} MiB",
        (peak - baseline) as f64 / MIB,
        bound / MIB
    );
    for f in flood {
        f.abort();
    }
    drop(jc);
    drop(ja);
}
