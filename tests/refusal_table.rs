//! The README's refusal table, held to the node: every reason code the node can give is in
//! the table with the status it comes with, every row is answered by real nodes in some
//! test of the suite (this file's or another's, with the exact status and reason), and the
//! bad input of an integrator gets a documented answer on both ports — over the size limit,
//! bytes that are no protobuf, invalid UTF-8, implausible dates of birth, control
//! characters in names, the U25 rule, the bearer scheme in any case.
//!
//! Real nodes over real TLS (the three-node federation of `kurzdraht-testkit`); requests that no
//! generated client can make (garbage, invalid UTF-8) are sent as raw gRPC messages over a
//! tonic channel with a codec that passes bytes through.

use kurzdraht_client::connection::api_client_tls;
use kurzdraht_node::clock::Clock;
use kurzdraht_node::error::{reason_of, retry_class, Retry};
use kurzdraht_node::tls::peer_client_tls;
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use kurzdraht_testkit::*;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

// ---- raw gRPC ----

/// A codec that sends and receives message bytes as they are.
#[derive(Default)]
struct RawCodec;

struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Sends `message` as the one request message of the unary method `path`; the answer's
/// bytes or the status.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    message: Vec<u8>,
    token: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        // The client must not refuse what the test wants the server to see.
        .max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

const SUBMIT: &str = "/kurzdraht.v1.AgencyApi/Submit";
const RECORD_CONSENT: &str = "/kurzdraht.v1.AgencyApi/RecordConsent";
const DELIVER: &str = "/kurzdraht.v1.PeerExchange/Deliver";
const DELIVER_BATCH: &str = "/kurzdraht.v1.PeerExchange/DeliverBatch";

/// A TLS channel to `agency`'s API port (no token: each call brings its own).
async fn api_channel(h: &Harness, agency: &str) -> Channel {
    let c = h.fed.client_config(agency).expect("client config");
    Endpoint::from_shared(c.endpoint.clone())
        .expect("endpoint")
        .tls_config(api_client_tls(&c.ca_pem, agency))
        .expect("tls")
        .connect()
        .await
        .expect("connect to the API port")
}

/// A mutual-TLS channel to `target`'s peer port, as the node of `as_agency`.
async fn peer_channel(h: &Harness, as_agency: &str, target: &str) -> Channel {
    let me = h.fed.config(as_agency).expect("config");
    let them = h.fed.config(target).expect("config");
    Endpoint::from_shared(format!("https://{}", them.peer_addr))
        .expect("endpoint")
        .tls_config(peer_client_tls(&me.tls, target))
        .expect("tls")
        .connect()
        .await
        .expect("connect to the peer port")
}

/// Asserts `code`/`reason` and that the message contains each of `mentions`.
fn refused<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, Status>,
    code: Code,
    reason: &str,
    mentions: &[&str],
) -> Status {
    let s = expect_refusal(what, r, code, reason);
    for m in mentions {
        assert!(
            s.message().contains(m),
            "{what}: the message does not name {m:?}: {:?}",
            s.message()
        );
    }
    s
}

/// What a refusal by the transport may change in a node's store: nothing, not even the
/// audit chain (audit entries, messages, outboxes).
async fn store_state(h: &Harness, agency: &str) -> (usize, usize, Vec<usize>) {
    let ledger = h.node(agency).ledger();
    (
        ledger.audit_iter().count(),
        ledger.message_records_iter().count(),
        [JC, JA, JN].iter().map(|p| ledger.outbox_len(p)).collect(),
    )
}

/// What a refusal by the node may change: its audit entry (of codes), nothing else.
async fn queued_state(h: &Harness, agency: &str) -> (usize, Vec<usize>) {
    let (_, messages, outboxes) = store_state(h, agency).await;
    (messages, outboxes)
}

/// Records a consent at `agency`'s node and waits until its notices are delivered (so that
/// the store stands still afterwards); returns its id.
async fn settled_consent(h: &Harness, agency: &str, req: pb::RecordConsentRequest) -> String {
    let mut c = h.client(agency).await;
    let recorded = record_consent(&mut c, req).await;
    for n in &recorded.notice_message_ids {
        wait_for_state(&c, n, pb::DeliveryState::Delivered).await;
    }
    recorded.consent.expect("the record").consent_id
}

/// Bytes that are no protobuf: a field key whose varint never ends.
fn garbage(len: usize) -> Vec<u8> {
    vec![0xff; len]
}

/// Replaces the one occurrence of `marker` in `bytes` by `with` (same length).
fn splice(mut bytes: Vec<u8>, marker: &[u8], with: &[u8]) -> Vec<u8> {
    assert_eq!(marker.len(), with.len());
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the marker is in the encoding");
    bytes[at..at + marker.len()].copy_from_slice(with);
    bytes
}

fn lena() -> pb::Subject {
    subject("Lena", "Hansen", "2005-04-12")
}

// ---- 1. Over the size limit: RESOURCE_EXHAUSTED / too-large on both ports ----

/// A request one byte over a port's limit is refused by the transport with
/// RESOURCE_EXHAUSTED/too-large (tonic alone says OUT_OF_RANGE); one of exactly the limit is
/// read (and, being garbage, refused as malformed) — on the API port and on the peer port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_size_limit_is_too_large_on_both_ports() {
    let h = start().await;
    let token = h.token(JC);
    let limits = h.fed.config(JC).expect("config").limits.envelope;
    let api_limit = kurzdraht_node::rpc::agency_api::request_limit(&limits);
    let peer_limit = kurzdraht_node::rpc::peer_exchange::transport_limit(&limits);
    assert_eq!(api_limit, (4 + 256 + 64) * 1024, "the README's default");
    assert_eq!(peer_limit, (1024 + 64) * 1024, "the README's default");
    let before = store_state(&h, JC).await;

    let api = api_channel(&h, JC).await;
    refused(
        "an API request one byte over the limit",
        raw_call(&api, SUBMIT, garbage(api_limit + 1), Some(&token)).await,
        Code::ResourceExhausted,
        "too-large",
        &[&format!("the limit is: {api_limit} bytes")],
    );
    refused(
        "an API request of exactly the limit is read",
        raw_call(&api, SUBMIT, garbage(api_limit), Some(&token)).await,
        Code::InvalidArgument,
        "malformed",
        &[],
    );
    // A well-formed Submit over the limit: refused before the node decodes it.
    let mut jc = h.client(JC).await;
    let big = certification_request(&lena(), &"x".repeat(api_limit));
    refused(
        "a Submit whose reason alone is over the API's limit",
        submit(&mut jc, JA, "", "", big).await,
        Code::ResourceExhausted,
        "too-large",
        &["the limit is"],
    );
    assert_eq!(
        store_state(&h, JC).await,
        before,
        "the transport's refusals left a trace"
    );
    // Control: under the limit, the node itself reads the request and names the field.
    let under = certification_request(&lena(), &"x".repeat(limits.max_payload_bytes));
    refused(
        "a Submit under the API's limit with an overlong reason",
        submit(&mut jc, JA, "", "", under).await,
        Code::InvalidArgument,
        "invalid-argument",
        &["body.reason", "longer than 2000"],
    );

    let peer = peer_channel(&h, JC, JA).await;
    let ja_before = store_state(&h, JA).await;
    for path in [DELIVER, DELIVER_BATCH] {
        refused(
            &format!("{path} one byte over the peer port's limit"),
            raw_call(&peer, path, garbage(peer_limit + 1), None).await,
            Code::ResourceExhausted,
            "too-large",
            &[&format!("the limit is: {peer_limit} bytes")],
        );
        refused(
            &format!("{path} of exactly the peer port's limit is read"),
            raw_call(&peer, path, garbage(peer_limit), None).await,
            Code::InvalidArgument,
            "malformed",
            &[],
        );
    }
    assert_eq!(
        store_state(&h, JA).await,
        ja_before,
        "the transport's refusals left a trace"
    );
}

// ---- 2. Bytes that are no protobuf, invalid UTF-8: INVALID_ARGUMENT / malformed ----

/// Invalid UTF-8 in a string field — at the top of a request and deep inside it — and bytes
/// that are no protobuf at all are the client's fault: INVALID_ARGUMENT/malformed, naming
/// the field where there is one, on the API port and on the peer port; nothing is stored.
/// The same request with valid text passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_malformed_not_internal() {
    let h = start().await;
    let token = h.token(JC);
    let api = api_channel(&h, JC).await;
    // An eight-letter name, so that the test can put eight bytes of its own in its place.
    let mara = subject("Mara-Lee", "Hansen", "2005-04-12");
    let consent = settled_consent(
        &h,
        JC,
        consent_request(&mara, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let before = store_state(&h, JC).await;

    // SubmitRequest.recipient (field 1) = 0xC3 0x28: not UTF-8.
    refused(
        "invalid UTF-8 in SubmitRequest.recipient",
        raw_call(&api, SUBMIT, vec![0x0a, 0x02, 0xc3, 0x28], Some(&token)).await,
        Code::InvalidArgument,
        "malformed",
        &["SubmitRequest.recipient", "UTF-8"],
    );
    // Deep inside: the subject's given name in the body of a Submit.
    let request = pb::SubmitRequest {
        idempotency_key: String::new(),
        recipient: JA.into(),
        consent_id: consent.clone(),
        in_reply_to: String::new(),
        body: Some(pb::MessageBody {
            body: Some(certification_request(&mara, "Antrag auf Zusicherung")),
        }),
    };
    let bad = splice(
        request.encode_to_vec(),
        b"Mara-Lee",
        b"Ma\xffa\xfe\xfd\xfc\xfb",
    );
    refused(
        "invalid UTF-8 in the given name inside a Submit",
        raw_call(&api, SUBMIT, bad, Some(&token)).await,
        Code::InvalidArgument,
        "malformed",
        &["Subject.given_name"],
    );
    for (what, path) in [("Submit", SUBMIT), ("RecordConsent", RECORD_CONSENT)] {
        refused(
            &format!("{what}: bytes that are no protobuf"),
            raw_call(&api, path, garbage(64), Some(&token)).await,
            Code::InvalidArgument,
            "malformed",
            &["failed to decode"],
        );
    }
    // Without a token, the token check comes first: nothing is decoded for a stranger.
    refused(
        "garbage without a token",
        raw_call(&api, SUBMIT, garbage(64), None).await,
        Code::Unauthenticated,
        "unauthenticated",
        &[],
    );
    assert_eq!(
        store_state(&h, JC).await,
        before,
        "a refusal changed the store"
    );
    // Control: the same request with the valid name goes through the same raw path.
    let answer = raw_call(&api, SUBMIT, request.encode_to_vec(), Some(&token))
        .await
        .expect("the well-formed request is accepted");
    let answer = pb::SubmitResponse::decode(answer.as_slice()).expect("a SubmitResponse");
    assert_eq!(answer.state, pb::DeliveryState::Queued as i32);

    // The peer port: SignedEnvelope.signer (field 4) not UTF-8, and garbage.
    let peer = peer_channel(&h, JC, JA).await;
    let ja_before = store_state(&h, JA).await;
    refused(
        "invalid UTF-8 in SignedEnvelope.signer",
        raw_call(&peer, DELIVER, vec![0x22, 0x02, 0xc3, 0x28], None).await,
        Code::InvalidArgument,
        "malformed",
        &["SignedEnvelope.signer"],
    );
    for path in [DELIVER, DELIVER_BATCH] {
        refused(
            &format!("{path}: bytes that are no protobuf"),
            raw_call(&peer, path, garbage(64), None).await,
            Code::InvalidArgument,
            "malformed",
            &["failed to decode"],
        );
    }
    assert_eq!(
        store_state(&h, JA).await,
        ja_before,
        "a refusal changed the store"
    );
    // Control: a decodable envelope reaches the node (and is refused for what it is).
    let env = pb::SignedEnvelope {
        header: vec![1, 2, 3],
        payload: vec![],
        signature: vec![0; 64],
        signer: JC.into(),
    };
    refused(
        "a decodable envelope with a bad signature",
        raw_call(&peer, DELIVER, env.encode_to_vec(), None).await,
        Code::Unauthenticated,
        "bad-signature",
        &[],
    );
}

// ---- 3. Dates of birth and names ----

/// The nodes' clocks at noon (UTC) of today, so that no date computed here turns at
/// midnight during the test.
async fn start_at_noon() -> (Harness, Clocks) {
    let today = kurzdraht_node::clock::date_of_ms(kurzdraht_node::clock::now_ms()).expect("today");
    let noon = kurzdraht_node::clock::start_of_day_ms(today) + 12 * 60 * 60 * 1000;
    let clocks: Clocks = [JC, JA, JN]
        .into_iter()
        .map(|a| (a, kurzdraht_node::clock::ManualClock::at(noon)))
        .collect();
    let h = start_on(&clocks).await;
    (h, clocks)
}

fn date_of(clocks: &Clocks, years_back: i32, days: i64) -> String {
    let today = kurzdraht_node::clock::date_of_ms(clocks[JC].now_ms()).expect("today");
    let d = today
        .replace_year(today.year() - years_back)
        .unwrap_or_else(|_| {
            today
                .replace_day(28)
                .expect("28th")
                .replace_year(today.year() - years_back)
                .expect("a date")
        });
    (d + time::Duration::days(days)).to_string()
}

/// A date of birth in the future (2100-01-01, tomorrow) or more than 120 years back
/// (1800-01-01, 121 today) is refused at RecordConsent and at Submit, naming the field; a
/// newline in a name is refused like NUL, naming the field, while a free text keeps its line
/// breaks. Controls: 120 years back and today's 24-year-old pass; nothing refused is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_dates_of_birth_and_broken_names_are_refused() {
    let (h, clocks) = start_at_noon().await;
    let mut jc = h.client(JC).await;
    let consent = settled_consent(
        &h,
        JC,
        consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let before = queued_state(&h, JC).await;
    let tomorrow = date_of(&clocks, 0, 1);
    let born_121_years_ago = date_of(&clocks, 121, 0);
    for dob in [
        "2100-01-01",
        tomorrow.as_str(),
        "1800-01-01",
        born_121_years_ago.as_str(),
    ] {
        let person = subject("Lena", "Hansen", dob);
        refused(
            &format!("a consent for someone born {dob}"),
            jc.record_consent(consent_request(&person, &[JA], &[pb::Purpose::U25MoveOut]))
                .await,
            Code::InvalidArgument,
            "invalid-argument",
            &["subject.date_of_birth"],
        );
        refused(
            &format!("a message about someone born {dob}"),
            submit(
                &mut jc,
                JA,
                &consent,
                "",
                certification_request(&person, "x"),
            )
            .await,
            Code::InvalidArgument,
            "invalid-argument",
            &["body.subject.date_of_birth"],
        );
    }
    for (field, name) in [
        ("given_name", "Lena\nMarie"),
        ("given_name", "Le\0na"),
        ("family_name", "Hansen\r"),
    ] {
        let mut person = lena();
        if field == "given_name" {
            person.given_name = name.into();
        } else {
            person.family_name = name.into();
        }
        refused(
            &format!("a consent with {field} {name:?}"),
            jc.record_consent(consent_request(&person, &[JA], &[pb::Purpose::U25MoveOut]))
                .await,
            Code::InvalidArgument,
            "invalid-argument",
            &[&format!("subject.{field}"), "control character"],
        );
        refused(
            &format!("a message with {field} {name:?}"),
            submit(
                &mut jc,
                JA,
                &consent,
                "",
                certification_request(&person, "x"),
            )
            .await,
            Code::InvalidArgument,
            "invalid-argument",
            &[&format!("body.subject.{field}")],
        );
    }
    let mut broken = consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]);
    broken.recorded_by = "Herr\nJensen".into();
    refused(
        "a newline in recorded_by",
        jc.record_consent(broken).await,
        Code::InvalidArgument,
        "invalid-argument",
        &["recorded_by"],
    );
    let Body::CertificationRequest(mut request) = certification_request(&lena(), "x") else {
        unreachable!()
    };
    request.caseworker = "Herr\nJensen".into();
    refused(
        "a newline in the caseworker",
        submit(
            &mut jc,
            JA,
            &consent,
            "",
            Body::CertificationRequest(request),
        )
        .await,
        Code::InvalidArgument,
        "invalid-argument",
        &["body.caseworker"],
    );
    assert_eq!(
        queued_state(&h, JC).await,
        before,
        "a refusal stored something"
    );

    // Controls: a free text keeps its line breaks; 120 today is a date of birth (the
    // consent is recorded; the U25 rule then refuses the message with its own reason).
    let ok = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena(), "Erste Zeile\r\nZweite Zeile\n"),
    )
    .await;
    assert!(!ok.is_empty());
    let old = subject("Lena", "Hansen", &date_of(&clocks, 120, 0));
    let old_consent = consent_id(
        &mut jc,
        consent_request(&old, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    refused(
        "a message about a 120-year-old",
        submit(
            &mut jc,
            JA,
            &old_consent,
            "",
            certification_request(&old, "x"),
        )
        .await,
        Code::InvalidArgument,
        "over-age",
        &["body.subject.date_of_birth", "25 or older"],
    );
}

/// The age rules take the German date (Europe/Berlin), not the UTC date: between German
/// midnight and UTC midnight (23:30 UTC is 00:30 CET or 01:30 CEST the next day) a person
/// born on the German date is born today, not tomorrow, and a person whose 25th birthday it
/// is in Germany is 25 (`over-age`). Control: at 21:30 UTC, before German midnight, the
/// same person is born tomorrow (`invalid-argument`) and the other is 24 (passes the U25
/// rule, then `no-consent`). In winter and in summer time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_german_date_decides_between_german_and_utc_midnight() {
    use kurzdraht_node::clock;
    let ms = |rfc3339: &str| {
        let t =
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .expect("a time");
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    let clocks: Clocks = [JC, JA, JN]
        .into_iter()
        .map(|a| (a, clock::ManualClock::at(ms("2026-01-14T23:30:00Z"))))
        .collect();
    let h = start_on(&clocks).await;
    let mut jc = h.client(JC).await;
    let set = |at: &str| {
        for c in clocks.values() {
            c.set(ms(at));
        }
    };
    // (the German date, an instant after German midnight but before UTC midnight, one
    // before German midnight)
    for (german_date, after, before) in [
        ("01-15", "2026-01-14T23:30:00Z", "2026-01-14T21:30:00Z"),
        ("06-15", "2026-06-14T23:30:00Z", "2026-06-14T21:30:00Z"),
    ] {
        let newborn = subject("Mia", "Hansen", &format!("2026-{german_date}"));
        let by_guardian = pb::RecordConsentRequest {
            given_by: pb::ConsentGiver::Guardian as i32,
            guardian_name: "Anke Hansen".into(),
            ..consent_request(&newborn, &[JA], &[pb::Purpose::U25MoveOut])
        };
        let twenty_five_today = subject("Kai", "Lorenzen", &format!("2001-{german_date}"));

        set(after);
        jc.record_consent(by_guardian.clone())
            .await
            .unwrap_or_else(|s| panic!("at {after}, born today in Germany: {s:?}"));
        refused(
            &format!("at {after}, 25 today in Germany"),
            submit(
                &mut jc,
                JA,
                "",
                "",
                certification_request(&twenty_five_today, "x"),
            )
            .await,
            Code::InvalidArgument,
            "over-age",
            &["body.subject.date_of_birth"],
        );

        set(before);
        refused(
            &format!("at {before}, born tomorrow in Germany"),
            jc.record_consent(by_guardian).await,
            Code::InvalidArgument,
            "invalid-argument",
            &["subject.date_of_birth", "future"],
        );
        refused(
            &format!("at {before}, 24 in Germany, 25 tomorrow"),
            submit(
                &mut jc,
                JA,
                "",
                "",
                certification_request(&twenty_five_today, "x"),
            )
            .await,
            Code::FailedPrecondition,
            "no-consent",
            &[],
        );
    }
}

// ---- 4. Reasons of their own ----

/// The U25 rule has its own reason (`over-age`), the same field's malformed value stays
/// `invalid-argument`; a 24-year-old passes the rule (and then needs a consent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_u25_rule_and_not_found_have_reasons_of_their_own() {
    let (h, clocks) = start_at_noon().await;
    let mut jc = h.client(JC).await;
    let twenty_five = subject("Kai", "Lorenzen", &date_of(&clocks, 25, 0));
    refused(
        "25 today",
        submit(
            &mut jc,
            JA,
            "",
            "",
            certification_request(&twenty_five, "x"),
        )
        .await,
        Code::InvalidArgument,
        "over-age",
        &["body.subject.date_of_birth"],
    );
    let twenty_four = subject("Kai", "Lorenzen", &date_of(&clocks, 25, 1));
    refused(
        "24, 25 tomorrow",
        submit(
            &mut jc,
            JA,
            "",
            "",
            certification_request(&twenty_four, "x"),
        )
        .await,
        Code::FailedPrecondition,
        "no-consent",
        &[],
    );
    let not_a_date = subject("Kai", "Lorenzen", "12.04.2005");
    refused(
        "not a date",
        submit(&mut jc, JA, "", "", certification_request(&not_a_date, "x")).await,
        Code::InvalidArgument,
        "invalid-argument",
        &["body.subject.date_of_birth"],
    );

    // NOT_FOUND / not-found: an unknown message, an unknown consent.
    let unknown = "0190a5d2-0000-7000-8000-000000000000";
    refused(
        "the status of an unknown message",
        jc.get_status(pb::GetStatusRequest {
            message_id: unknown.into(),
        })
        .await,
        Code::NotFound,
        "not-found",
        &[unknown],
    );
    refused(
        "withdrawing an unknown consent",
        jc.withdraw_consent(pb::WithdrawConsentRequest {
            idempotency_key: String::new(),
            consent_id: unknown.into(),
            recorded_by: "Herr Jensen".into(),
            manner: String::new(),
        })
        .await,
        Code::NotFound,
        "not-found",
        &[unknown],
    );
    refused(
        "closing the case of an unknown consent",
        jc.close_case(pb::CloseCaseRequest {
            consent_id: unknown.into(),
        })
        .await,
        Code::NotFound,
        "not-found",
        &[],
    );
}

/// The consent refusals no other test shows on real nodes, and `not-recording-agency`:
/// a consent not yet in force, one expired (the clock moved two minutes past it), one
/// between two agencies it names, and a withdrawal asked of an agency that did not record
/// the consent. Each beside a control that passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_refusals_at_their_edges() {
    let (h, clocks) = start_at_noon().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let now = clocks[JC].now_ms();
    let minute = 60_000;

    let mut later = consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]);
    later.valid_from_ms = now + 60 * minute;
    later.valid_until_ms = now + 120 * minute;
    let later = consent_id(&mut jc, later).await;
    refused(
        "under a consent in force in an hour",
        submit(&mut jc, JA, &later, "", certification_request(&lena(), "x")).await,
        Code::FailedPrecondition,
        "consent-not-yet-valid",
        &[],
    );
    let mut short = consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]);
    short.valid_until_ms = now + minute;
    let short = consent_id(&mut jc, short).await;
    submit_ok(&mut jc, JA, &short, certification_request(&lena(), "x")).await;
    clocks[JC].advance(2 * minute);
    refused(
        "under a consent that ran out a minute ago",
        submit(&mut jc, JA, &short, "", certification_request(&lena(), "x")).await,
        Code::FailedPrecondition,
        "consent-expired",
        &[],
    );
    clocks[JC].advance(-2 * minute);

    // A consent the Jugendamt recorded, naming the Jobcenter and the other Jugendamt.
    let both = consent_id(
        &mut ja,
        consent_request(&lena(), &[JC, JN], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&jc, &both, pb::ConsentState::ConsentInForce).await;
    refused(
        "from the Jobcenter to Norderstedt, both named, neither the recorder",
        submit(&mut jc, JN, &both, "", certification_request(&lena(), "x")).await,
        Code::FailedPrecondition,
        "consent-not-with-controller",
        &[],
    );
    // Control: with the recorder, the same consent covers the message.
    submit_ok(&mut jc, JA, &both, certification_request(&lena(), "x")).await;
    refused(
        "the Jobcenter withdraws the Jugendamt's consent",
        jc.withdraw_consent(pb::WithdrawConsentRequest {
            idempotency_key: String::new(),
            consent_id: both.clone(),
            recorded_by: "Herr Jensen".into(),
            manner: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "not-recording-agency",
        &[JA],
    );
    let mut replacement = consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]);
    replacement.supersedes = both.clone();
    refused(
        "the Jobcenter replaces the Jugendamt's consent",
        jc.record_consent(replacement).await,
        Code::FailedPrecondition,
        "not-recording-agency",
        &[JA],
    );
    // Control: the recorder withdraws it.
    ja.withdraw_consent(pb::WithdrawConsentRequest {
        idempotency_key: String::new(),
        consent_id: both,
        recorded_by: "Frau Sievers".into(),
        manner: "schriftlich".into(),
    })
    .await
    .expect("the recorder withdraws its consent");
}

/// A peer over its envelopes per second is turned away with RESOURCE_EXHAUSTED/
/// `rate-limited` (transient): at one envelope per second, a batch of two cannot be
/// admitted, whenever it comes; the single envelope before it was (and was judged on its
/// merits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_rate_is_rate_limited() {
    let mut h = start().await;
    h.reconfigure(
        JA,
        &[("[limits]\n", "[limits]\npeer_requests_per_second = 1\n")],
    )
    .await;
    // Norderstedt sends nothing of its own here: the bucket is the test's alone.
    let peer = peer_channel(&h, JN, JA).await;
    let env = pb::SignedEnvelope {
        header: vec![1, 2, 3],
        payload: vec![],
        signature: vec![0; 64],
        signer: JN.into(),
    };
    refused(
        "one envelope, admitted",
        raw_call(&peer, DELIVER, env.encode_to_vec(), None).await,
        Code::Unauthenticated,
        "bad-signature",
        &[],
    );
    let batch = pb::EnvelopeBatch {
        envelopes: vec![env.clone(), env],
    };
    let s = refused(
        "two envelopes at one per second",
        raw_call(&peer, DELIVER_BATCH, batch.encode_to_vec(), None).await,
        Code::ResourceExhausted,
        "rate-limited",
        &["envelopes per second"],
    );
    assert_eq!(retry_class(s.code(), reason_of(&s)), Retry::Transient);
}

/// A delivery the receiver cannot make durable is ABORTED/`retry`: the flush after a
/// (duplicate) delivery fails, no receipt leaves, the sender delivers again — and then gets
/// the original receipt (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_cannot_be_stored_is_aborted_for_a_retry() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let recorded = record_consent(
        &mut jc,
        consent_request(&lena(), &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let consent = recorded.consent.expect("record").consent_id;
    let id = submit_ok(&mut jc, JA, &consent, certification_request(&lena(), "x")).await;
    let delivered = wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    let ja = h.client(JA).await;
    let items = wait_for_inbox_len(&ja, 2).await;
    let envelope = items
        .iter()
        .find(|i| i.message_id == id)
        .and_then(|i| i.envelope.clone())
        .expect("the delivered envelope");
    let peer = peer_channel(&h, JC, JA).await;

    let release = h.node(JA).ledger().inject_flush_failure();
    release.notify_one();
    let s = refused(
        "a delivery whose flush fails",
        raw_call(&peer, DELIVER, envelope.encode_to_vec(), None).await,
        Code::Aborted,
        "retry",
        &["durable"],
    );
    assert_eq!(retry_class(s.code(), reason_of(&s)), Retry::Transient);
    let again = raw_call(&peer, DELIVER, envelope.encode_to_vec(), None)
        .await
        .expect("delivered again, answered with the receipt");
    let receipt = pb::SignedReceipt::decode(again.as_slice()).expect("a receipt");
    assert_eq!(Some(receipt), delivered.receipt, "not the original receipt");
}

// ---- 5. The bearer scheme ----

/// `authorization: Bearer <token>` with the scheme in any case (RFC 7235) and any number of
/// spaces; other schemes, a missing token, a wrong token are UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = start().await;
    let token = h.token(JC);
    let api = pb::agency_api_client::AgencyApiClient::new(api_channel(&h, JC).await);
    let call = |value: String| {
        let mut api = api.clone();
        async move {
            let mut request = tonic::Request::new(pb::ListConsentsRequest::default());
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
            api.list_consents(request).await
        }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR", "Bearer "] {
        call(format!("{scheme} {token}"))
            .await
            .unwrap_or_else(|s| panic!("{scheme:?} refused: {s:?}"));
    }
    for value in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        "Bearer ".to_string(),
        "Bearer".to_string(),
        format!("Bearer {token}x"),
        token.clone(),
    ] {
        refused(
            &format!("authorization {value:?}"),
            call(value.clone()).await,
            Code::Unauthenticated,
            "unauthenticated",
            &[],
        );
    }
}

// ---- 6. The table ----

/// One row of the README's table.
#[derive(Debug)]
struct Row {
    status: Code,
    reasons: Vec<String>,
    retry: Retry,
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn code_named(name: &str) -> Code {
    match name {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "UNAVAILABLE" => Code::Unavailable,
        "ABORTED" => Code::Aborted,
        "INTERNAL" => Code::Internal,
        other => panic!("the table names an unknown status {other}"),
    }
}

/// The backticked words of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The rows of the table under "What a refusal looks like".
fn readme_table() -> Vec<Row> {
    let readme = read("README.md");
    let section = readme
        .split("## What a refusal looks like")
        .nth(1)
        .expect("the README has the section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let rows: Vec<Row> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row of four cells: {l}");
            let status = ticked(cells[0]);
            assert_eq!(status.len(), 1, "one status per row: {l}");
            let retry = match cells[3] {
                "final" => Retry::Final,
                "transient" => Retry::Transient,
                other => panic!("retry is final or transient, not {other:?}: {l}"),
            };
            assert!(cells[2].len() > 20, "a row says when: {l}");
            Row {
                status: code_named(&status[0]),
                reasons: ticked(cells[1]),
                retry,
            }
        })
        .collect();
    assert!(
        rows.len() > 20,
        "the table was not found: {} rows",
        rows.len()
    );
    rows
}

/// The string literals of the function `name` in `source` (up to the next `fn `).
fn literals_of_fn(source: &str, name: &str) -> BTreeSet<String> {
    let start = source
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("no fn {name}"));
    let body = &source[start..];
    let end = ["\n    pub fn ", "\n    fn ", "\n}"]
        .iter()
        .filter_map(|next| body[3..].find(next))
        .min()
        .map_or(body.len(), |e| e + 3);
    body[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every reason code the node can give, read from the code that gives them: the one mapping
/// `NodeError::reason_code` and the consent decision's codes.
fn reasons_in_the_code() -> BTreeSet<String> {
    let mut all = literals_of_fn(&read("crates/node/src/error.rs"), "reason_code");
    all.extend(literals_of_fn(
        &read("crates/ledger/src/consent.rs"),
        "code",
    ));
    assert!(
        all.contains("too-large") && all.contains("no-consent"),
        "{all:?}"
    );
    all
}

/// One error of every kind, as the node makes them.
async fn one_of_each() -> Vec<kurzdraht_node::NodeError> {
    use kurzdraht_envelope::EnvelopeError as E;
    use kurzdraht_ledger::{ConsentRefusal as C, LedgerError as L};
    use kurzdraht_node::NodeError as N;
    let s = || "x".to_string();
    let mut all = vec![
        N::Unauthenticated(s()),
        N::PermissionDenied(s()),
        N::CertificateRevoked(s()),
        N::invalid("f", "bad"),
        N::OverAge {
            field: s(),
            reason: s(),
        },
        N::NotRecordingAgency(s()),
        N::NotFound(s()),
        N::AccountLocked { until_secs: 0 },
        N::ResourceExhausted(s()),
        N::TooLarge(s()),
        N::Malformed(s()),
        N::ClockSkew(s()),
        N::Aborted(s()),
        N::Lagged(s()),
        N::NotStored(s()),
        N::StoreFailed(s()),
        N::Internal(s()),
        N::Task(s()),
        N::config("k", "r"),
        N::Tls(s()),
        N::Certificate(s()),
        N::Io(std::io::Error::other("x")),
        N::Listen {
            key: "listen.peer",
            addr: free_addrs(1)[0],
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        },
        // A real transport error: a connection to a port nobody listens on.
        N::Transport(
            Endpoint::from_shared(format!("http://{}", free_addrs(1)[0]))
                .expect("endpoint")
                .connect()
                .await
                .expect_err("nobody listens there"),
        ),
        N::Envelope(E::TooLarge {
            field: "payload",
            size: 2,
            limit: 1,
        }),
        N::Envelope(E::BadSignature { signer: s() }),
        N::Envelope(E::Malformed {
            field: "header",
            reason: s(),
        }),
        N::Envelope(E::PayloadHashMismatch),
        N::Envelope(E::SenderMismatch {
            signer: s(),
            sender: s(),
        }),
        N::Envelope(E::KindMismatch {
            header: pb::MessageKind::CertificationRequest,
            body: pb::MessageKind::ReferralResponse,
        }),
        N::Envelope(E::ReceiptMismatch { field: "receipt" }),
        N::Ledger(L::Locked {
            path: Default::default(),
        }),
        N::Ledger(L::ConsentExists { consent_id: s() }),
        N::Ledger(L::UnknownConsent { consent_id: s() }),
        N::Ledger(L::AlreadyWithdrawn { consent_id: s() }),
        N::Ledger(L::AlreadySuperseded { consent_id: s() }),
        N::Ledger(L::MessageIdConflict { message_id: s() }),
        N::Ledger(L::UnknownMessage { message_id: s() }),
        N::Ledger(L::AccountExists { name: s() }),
        N::Ledger(L::UnknownAccount { name: s() }),
        N::Ledger(L::NoDataKey),
        N::Ledger(L::IdempotencyKeyReused {
            method: s(),
            answered_at_ms: 0,
        }),
    ];
    for c in [
        C::NoConsent,
        C::Withdrawn,
        C::Superseded,
        C::Erased,
        C::Expired,
        C::NotYetValid,
        C::OtherSubject,
        C::OtherRecipient,
        C::OtherSender,
        C::NotWithController,
        C::OtherPurpose,
        C::CategoryNotCovered,
        C::HealthNotExplicit,
    ] {
        all.push(N::Consent(c));
    }
    all
}

/// The table lists every reason code the node can give, no other, each once, with the
/// status the node really sends it with and the retry class the node's own delivery gives
/// it.
#[tokio::test]
async fn the_table_lists_every_reason_with_its_status() {
    let rows = readme_table();
    let mut table: BTreeMap<String, (Code, Retry)> = BTreeMap::new();
    for row in &rows {
        for r in &row.reasons {
            assert!(
                table.insert(r.clone(), (row.status, row.retry)).is_none(),
                "{r} is in the table twice"
            );
        }
    }
    let in_code = reasons_in_the_code();
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        listed.difference(&in_code).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the table lists reasons the node never gives"
    );
    assert_eq!(
        in_code.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the node gives reasons the table does not list"
    );
    // Each reason comes with the table's status (through the one mapping) and retry class.
    let mut made = BTreeSet::new();
    for e in one_of_each().await {
        let what = format!("{e:?}");
        let status = Status::from(e);
        let reason = reason_of(&status)
            .expect("every status carries a reason")
            .to_string();
        let (code, retry) = table
            .get(&reason)
            .unwrap_or_else(|| panic!("{what}: {reason} is not in the table"));
        assert_eq!(
            status.code(),
            *code,
            "{what}: the table's status for {reason}"
        );
        assert_eq!(
            retry_class(status.code(), Some(&reason)),
            *retry,
            "{what}: the table's retry for {reason}"
        );
        made.insert(reason);
    }
    assert_eq!(
        listed.difference(&made).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "one_of_each misses a kind of error"
    );
}

/// Reasons no test drives real nodes to, and why; their rows are held by the mapping
/// (`the_table_lists_every_reason_with_its_status`) only.
const NOT_ON_REAL_NODES: [(&str, &str); 12] = [
    ("receipt-mismatch", "the sender's own check of a receipt it receives (delivery retries); no answer of a node"),
    ("consent-health-not-explicit", "a consent with health data but without explicit consent is refused when recorded and when received, so no node holds one"),
    ("store-failed", "needs the store to fail twice in a row; the fault injection fails one flush"),
    ("store-locked", "given at start only, never as an answer to a call"),
    ("watch-lagged", "needs 8,192 final statuses behind an idle reader: a load test, not a unit of this suite"),
    ("internal", "a fault of the node: none is known to provoke"),
    ("store", "a fault of the store: none is known to provoke"),
    ("io", "a fault of the host"),
    ("tls", "a fault of the node's TLS set-up, at start"),
    ("config", "a fault of the configuration, at start"),
    ("transport", "a fault of the listener, at start"),
    ("listen", "a listen address held by another process, at start only (serve exits 9; tests/serve_exit_codes.rs)"),
];

/// Every row of the table is answered by real nodes: some test of the suite asserts the
/// exact status and reason of a real answer (`expect_refusal`/`refused(.., Code::X,
/// "reason")` or the like). Rows no test can reach are listed, with the reason, in
/// [`NOT_ON_REAL_NODES`].
#[test]
fn every_row_of_the_table_is_proved_by_a_test() {
    let mut asserted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for dir in ["tests", "crates/cli/tests", "crates/node/tests"] {
        for entry in std::fs::read_dir(workspace().join(dir))
            .expect("test dir")
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read a test");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        // `Code::Name,` then (after whitespace, maybe `Some(`) the reason literal.
        for (i, _) in text.match_indices("Code::") {
            let rest = &text[i + 6..];
            let Some((code, after)) = rest.split_once(',') else {
                continue;
            };
            if !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            let after = after.trim_start();
            let after = after.strip_prefix("Some(").unwrap_or(after);
            let Some(lit) = after.strip_prefix('"') else {
                continue;
            };
            let Some((reason, _)) = lit.split_once('"') else {
                continue;
            };
            asserted
                .entry((code.to_string(), reason.to_string()))
                .or_default()
                .insert(name.clone());
        }
    }
    let exempt: BTreeMap<&str, &str> = NOT_ON_REAL_NODES.into_iter().collect();
    let mut missing = Vec::new();
    for row in readme_table() {
        let code = format!("{:?}", row.status);
        for reason in row.reasons {
            let proved = asserted.get(&(code.clone(), reason.clone()));
            match (proved, exempt.get(reason.as_str())) {
                (Some(files), None) => println!("{code}/{reason}: {files:?}"),
                (None, Some(why)) => println!("{code}/{reason}: not on real nodes ({why})"),
                (Some(files), Some(_)) => {
                    panic!("{reason} is exempt but asserted in {files:?}: drop the exemption")
                }
                (None, None) => missing.push(format!("{code}/{reason}")),
            }
        }
    }
    assert!(missing.is_empty(), "rows no test proves: {missing:?}");
}
