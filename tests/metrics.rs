//! Metrics on their own plain-HTTP port: the Prometheus text exposition of a running
//! federation, scraped like Prometheus would, before and after a delivered and a refused
//! submission, and while a peer is down (outbox depth, age of the oldest message, retries).

use kurzdraht_proto::v1::{self as pb};
use kurzdraht_testkit::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

/// One scrape: samples by `name{label="value",...}` (labels sorted), and the raw body.
struct Scrape {
    samples: BTreeMap<String, f64>,
    body: String,
}

impl Scrape {
    /// The value of series `key`, which the scrape must hold: a missing or renamed series
    /// fails the test instead of passing for 0.
    fn get(&self, key: &str) -> f64 {
        self.samples
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("series {key} missing from the scrape:\n{}", excerpt(self)))
    }

    /// A labelled counter that is exported only from its first event on (a refusal reason):
    /// 0 while absent.
    fn count_or_zero(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }
}

/// Sends one raw HTTP/1.1 request; returns (status line, headers, body).
async fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a header/body separator");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let length: usize = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("Content-Length"))
        })
        .expect("a Content-Length header");
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status.to_string(), headers.to_string(), body.to_string())
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Fails the parse with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Parses `{a="x",b="y"}` (with `\\`, `\"`, `\n` escapes) into sorted pairs.
fn parse_labels(s: &str, line: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("labels not in braces: {line:?}"))?;
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\": {line:?}"))?;
        ensure!(is_name(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {line:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {line:?}")),
            }
        };
        ensure!(
            labels.insert(name.to_string(), value).is_none(),
            "label twice in {line:?}"
        );
        rest = &after[end + 1..];
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| format!("labels not separated by commas: {line:?}"))?;
        }
    }
    Ok(labels)
}

/// Parses the exposition line by line: `# HELP name text`, `# TYPE name type`, and samples
/// `name{labels} value` whose family was declared by a TYPE line before. Returns the
/// samples by `name{label="value",...}` (labels sorted).
fn parse_exposition(body: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut samples = BTreeMap::new();
    ensure!(
        body.ends_with('\n'),
        "the exposition does not end with a line feed"
    );
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest
                .split_once(' ')
                .ok_or_else(|| format!("HELP without text: {line:?}"))?;
            ensure!(is_name(name) && !text.is_empty(), "bad HELP line {line:?}");
            ensure!(
                helps.insert(name.to_string(), ()).is_none(),
                "HELP twice: {line:?}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("TYPE without type: {line:?}"))?;
            ensure!(is_name(name), "bad TYPE name in {line:?}");
            ensure!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE {kind:?}"
            );
            ensure!(helps.contains_key(name), "TYPE before HELP: {line:?}");
            ensure!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line:?}"
            );
            continue;
        }
        ensure!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "unexpected line {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("sample without a value: {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
        };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], parse_labels(&series[i..], line)?),
            None => (series, BTreeMap::new()),
        };
        ensure!(is_name(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .ok_or_else(|| format!("sample without a TYPE line: {line:?}"))?;
        if kind == "counter" {
            ensure!(name.ends_with("_total"), "counter not named _total: {name}");
            ensure!(
                value.is_sign_positive() || value == 0.0,
                "negative counter: {line:?}"
            );
        }
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", pairs.join(","))
        };
        ensure!(
            samples.insert(key, value).is_none(),
            "sample twice: {line:?}"
        );
    }
    Ok(samples)
}

async fn scrape(h: &Harness, agency: &str) -> Scrape {
    let addr = metrics_addr(h, agency);
    let (status, headers, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    Scrape {
        samples: parse_exposition(&body)
            .unwrap_or_else(|e| panic!("{agency}'s exposition does not parse: {e}\n{body}")),
        body,
    }
}

fn metrics_addr(h: &Harness, agency: &str) -> SocketAddr {
    h.fed
        .config(agency)
        .unwrap()
        .metrics_addr
        .expect("the local federation configures a metrics port")
}

/// Waits until `key` on `agency`'s metrics reaches at least `value`.
async fn wait_for_metric(h: &Harness, agency: &str, key: &str, value: f64) -> Scrape {
    wait_until(&format!("{agency}: {key} >= {value}"), || async move {
        let s = scrape(h, agency).await;
        match s.samples.get(key) {
            Some(v) if *v >= value => Ok(s),
            Some(v) => Err(format!("{key} = {v}")),
            None => Err(format!("{key} missing")),
        }
    })
    .await
}

fn excerpt(s: &Scrape) -> String {
    s.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

const SUBMISSIONS: &str = "kurzdraht_submissions_total";
const DELIVERIES: &str = "kurzdraht_deliveries_total";
const NO_CONSENT: &str = "kurzdraht_refusals_total{reason=\"no-consent\"}";
const RETRIES: &str = "kurzdraht_delivery_retries_total";
const RECEIVED: &str = "kurzdraht_received_total";
const LATENCY_COUNT: &str = "kurzdraht_receipt_latency_seconds_count";

fn depth(peer: &str) -> String {
    format!("kurzdraht_outbox_depth{{peer=\"{peer}\"}}")
}
fn oldest(peer: &str) -> String {
    format!("kurzdraht_outbox_oldest_age_seconds{{peer=\"{peer}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_deliveries_and_refusals() {
    let mut h = start().await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");

    // Anything but GET /metrics is 404.
    let addr = metrics_addr(&h, JC);
    assert_eq!(http_get(addr, "/").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http_get(addr, "/metrics/x").await.0,
        "HTTP/1.1 404 Not Found"
    );

    // A consent, replicated (its notice is a delivery too), before the first scrape.
    let recorded = record_consent(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let consent = recorded.consent.expect("the record").consent_id;
    for notice in &recorded.notice_message_ids {
        wait_for_state(&jc, notice, pb::DeliveryState::Delivered).await;
    }
    let before = wait_for_metric(&h, JC, DELIVERIES, 1.0).await;
    println!("--- {JC} before ---\n{}", excerpt(&before));
    for family in [
        SUBMISSIONS,
        DELIVERIES,
        RETRIES,
        RECEIVED,
        LATENCY_COUNT,
        "kurzdraht_store_bytes",
        &depth(JA),
        &depth(JN),
        &oldest(JA),
    ] {
        assert!(before.samples.contains_key(family), "{family} missing");
    }
    assert!(
        before
            .body
            .contains("# TYPE kurzdraht_refusals_total counter"),
        "refusals declared even before the first one"
    );

    // One message that is delivered, one that is refused for want of consent.
    let delivered = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Antrag auf Zusicherung"),
    )
    .await;
    wait_for_state(&jc, &delivered, pb::DeliveryState::Delivered).await;
    expect_refusal(
        "a submission without consent",
        submit(&mut jc, JA, "", "", certification_request(&lena, "ohne")).await,
        Code::FailedPrecondition,
        "no-consent",
    );

    let after = wait_for_metric(&h, JC, DELIVERIES, before.get(DELIVERIES) + 1.0).await;
    println!("--- {JC} after ---\n{}", excerpt(&after));
    assert_eq!(after.get(SUBMISSIONS), before.get(SUBMISSIONS) + 1.0);
    assert_eq!(after.get(DELIVERIES), before.get(DELIVERIES) + 1.0);
    assert_eq!(
        after.get(NO_CONSENT),
        before.count_or_zero(NO_CONSENT) + 1.0
    );
    assert_eq!(after.get(LATENCY_COUNT), before.get(LATENCY_COUNT) + 1.0);
    assert_eq!(
        after.get("kurzdraht_receipt_latency_seconds_bucket{le=\"+Inf\"}"),
        after.get(LATENCY_COUNT)
    );
    assert!(after.get("kurzdraht_store_bytes") > 0.0);
    assert_eq!(after.get(&depth(JA)), 0.0);
    assert_eq!(after.get(&oldest(JA)), 0.0);

    // The receiving side counts what it stored: the consent notice and the request.
    let ja = scrape(&h, JA).await;
    println!("--- {JA} ---\n{}", excerpt(&ja));
    assert_eq!(ja.get(RECEIVED), 2.0);
    assert_eq!(ja.get(SUBMISSIONS), 0.0);

    // With the Jugendamt down, the message waits: depth 1, an age, and retries.
    h.stop(JA).await;
    let queued = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Erinnerung"),
    )
    .await;
    wait_for_metric(&h, JC, RETRIES, before.get(RETRIES) + 1.0).await;
    let waiting = wait_for_metric(&h, JC, &oldest(JA), 0.001).await;
    println!("--- {JC} while {JA} is down ---\n{}", excerpt(&waiting));
    assert_eq!(waiting.get(&depth(JA)), 1.0);
    assert_eq!(waiting.get(&depth(JN)), 0.0);
    h.restart(JA).await;
    wait_for_state(&jc, &queued, pb::DeliveryState::Delivered).await;
    let drained = wait_for_metric(&h, JC, DELIVERIES, after.get(DELIVERIES) + 1.0).await;
    assert_eq!(drained.get(&depth(JA)), 0.0);
    assert_eq!(drained.get(SUBMISSIONS), after.get(SUBMISSIONS) + 1.0);
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\",y=\"2\"} 1\n";
    assert_eq!(
        parse_exposition(ok)
            .unwrap()
            .get("a_total{x=\"q\"\",y=\"2\"}"),
        Some(&1.0)
    );
    for bad in [
        "a_total 1\n",                                              // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n", // no number
        "# HELP a A.\n# TYPE a gauge\na{x=\"1} 1\n",                // unterminated label
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"y=\"2\"} 1\n",       // no comma
        "# HELP a A.\n# TYPE a gauge\na 1",                         // no final line feed
        "# TYPE a gauge\na 1\n",                                    // no HELP
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}
