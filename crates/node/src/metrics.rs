//! Metrics in the Prometheus text exposition format (version 0.0.4), served over plain
//! HTTP on a listener of its own (`[metrics] listen` in `node.toml`; no section, no listener).
//!
//! Counters live in [`Metrics`] (atomics, held by the [`Node`]) and are bumped by one-line
//! calls where the work happens: submission, delivery, reception, refusal, a directory
//! taken or refused. Gauges about the store — outbox depth and the age of the oldest queued
//! message per peer, the store's size — are read from the ledger at scrape time (on a
//! blocking thread: counting an outbox reads it), so they are never stale; so are the
//! directory in force (version, fingerprint), each peer's reachability (the last probe) and
//! the time left on the node's TLS certificate.
//!
//! The HTTP side is deliberately tiny: one request per connection, `GET /metrics` answers
//! 200, any other request 404, a malformed one 400; requests are read with a size limit and
//! a timeout, connections are handled a few at a time. The exposition holds no personal
//! data: only counts, agency ids, reason codes and the directory's fingerprint. It has no
//! authentication, so bind it to
//! loopback (or a monitoring network) only.

use crate::{node::Node, NodeError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Upper bounds (seconds) of the receipt latency histogram's buckets: from a fast loopback
/// delivery to a message that waited days for its peer.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0, 86400.0,
];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest request head read before answering 400.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once.
const MAX_CONNECTIONS: usize = 8;

/// A histogram with fixed buckets ([`LATENCY_BUCKETS`]); counts per bucket are kept
/// non-cumulative and summed when rendered.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bucket.
    overflow: AtomicU64,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        match LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_micros
            .fetch_add((seconds * 1_000_000.0) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// The node's counters. Cheap to bump from any task; read when scraped.
#[derive(Debug, Default)]
pub struct Metrics {
    submissions: AtomicU64,
    deliveries: AtomicU64,
    retries: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    /// Refusals by reason code (codes are the static strings of `NodeError::reason_code`).
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    receipt_latency: Histogram,
    directories_taken: AtomicU64,
    directories_refused: AtomicU64,
}

impl Metrics {
    /// A case message was accepted for delivery (Submit answered QUEUED).
    pub fn submitted(&self) {
        self.submissions.fetch_add(1, Relaxed);
    }

    /// A message (case message or consent notice) was delivered and its receipt verified;
    /// `submitted_at_ms` (if known) gives the submit→receipt latency.
    pub fn delivered(&self, submitted_at_ms: Option<i64>, now_ms: i64) {
        self.deliveries.fetch_add(1, Relaxed);
        if let Some(at) = submitted_at_ms {
            let ms = now_ms.saturating_sub(at).max(0);
            self.receipt_latency.observe(ms as f64 / 1000.0);
        }
    }

    /// A delivery attempt failed transiently and will be retried.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// An envelope from a peer was stored (duplicates are not counted).
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    /// A redelivery of a held envelope was answered with its original receipt (the first
    /// per message is audited, every one is counted).
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    /// Something was refused — a submission, a delivery attempt, a reception — for `reason`.
    pub fn refused(&self, reason: &'static str) {
        let mut map = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(reason).or_insert(0) += 1;
    }

    /// A newer directory was taken (`true`) or a directory file refused (`false`).
    pub fn directory_update(&self, taken: bool) {
        if taken {
            self.directories_taken.fetch_add(1, Relaxed);
        } else {
            self.directories_refused.fetch_add(1, Relaxed);
        }
    }

    fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// One gauge sample per peer, read from the ledger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerQueue {
    pub peer: String,
    pub depth: u64,
    /// Age of the oldest queued message in seconds (0 when the queue is empty).
    pub oldest_age_seconds: f64,
}

/// What the store says at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    pub queues: Vec<PeerQueue>,
    /// `None` if the size could not be read.
    pub store_bytes: Option<u64>,
    /// The directory in force: version and fingerprint.
    pub directory: Option<(u64, String)>,
    /// Per peer, whether the last probe reached it.
    pub reachable: Vec<(String, bool)>,
    /// Seconds until the node's TLS certificate expires (negative once it has).
    pub certificate_expiry_seconds: Option<f64>,
}

impl StoreGauges {
    /// Reads the gauges of `node`'s store. Best effort: what cannot be read is left out and
    /// logged, so that a failing store still shows its counters.
    pub fn read(node: &Node) -> Self {
        let ledger = node.ledger();
        let now = node.now_ms();
        let mut queues = Vec::new();
        for (peer, _) in node.outbox_signals() {
            let depth = ledger.outbox_len(peer) as u64;
            let oldest = match ledger.outbox_head(peer) {
                Ok(Some(head)) => match ledger.message(&head.message_id) {
                    Ok(record) => record
                        .and_then(|r| r.status)
                        .map(|s| now.saturating_sub(s.submitted_at_ms).max(0)),
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "metrics: cannot read the outbox head's record");
                        None
                    }
                },
                Ok(None) => Some(0),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "metrics: cannot read the outbox head");
                    None
                }
            };
            queues.push(PeerQueue {
                peer: peer.clone(),
                depth,
                oldest_age_seconds: oldest.unwrap_or(0) as f64 / 1000.0,
            });
        }
        let store_bytes = match ledger.size_on_disk() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the store's size");
                None
            }
        };
        let directory = node.directory();
        Self {
            queues,
            store_bytes,
            directory: Some((directory.version(), directory.fingerprint())),
            reachable: node.reachability().into_iter().collect(),
            certificate_expiry_seconds: Some(
                node.certificate_not_after_ms()
                    .saturating_sub(crate::clock::now_ms()) as f64
                    / 1000.0,
            ),
        }
    }
}

/// Escapes a label value (backslash, double quote, line feed).
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the exposition from the counters and the store gauges.
pub fn render(m: &Metrics, store: &StoreGauges) -> String {
    let mut out = String::with_capacity(4096);
    render_counters(&mut out, m);
    render_outbox(&mut out, store);
    render_latency(&mut out, &m.receipt_latency);
    render_store_and_peers(&mut out, m, store);
    out
}

/// Submissions, deliveries, refusals by reason, retries, receptions and duplicates.
fn render_counters(out: &mut String, m: &Metrics) {
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    };
    counter(
        out,
        "kurzdraht_submissions_total",
        "Case messages accepted by Submit (queued for delivery).",
        m.submissions.load(Relaxed),
    );
    counter(
        out,
        "kurzdraht_deliveries_total",
        "Messages delivered to a peer whose signed receipt verified.",
        m.deliveries.load(Relaxed),
    );
    header(
        out,
        "kurzdraht_refusals_total",
        "counter",
        "Refusals (submission, delivery attempt, reception) by reason code.",
    );
    for (reason, n) in m.refusals() {
        let _ = writeln!(
            out,
            "kurzdraht_refusals_total{{reason=\"{}\"}} {n}",
            label_value(reason)
        );
    }
    counter(
        out,
        "kurzdraht_delivery_retries_total",
        "Delivery attempts that failed transiently and were scheduled again.",
        m.retries.load(Relaxed),
    );
    counter(
        out,
        "kurzdraht_received_total",
        "Envelopes received from peers and stored (duplicates not counted).",
        m.received.load(Relaxed),
    );
    counter(
        out,
        "kurzdraht_duplicates_total",
        "Redeliveries answered with the original receipt (the first per message is audited).",
        m.duplicates.load(Relaxed),
    );
}

/// The outbox per peer: depth and the age of its oldest message.
fn render_outbox(out: &mut String, store: &StoreGauges) {
    header(
        out,
        "kurzdraht_outbox_depth",
        "gauge",
        "Messages queued for delivery, per peer.",
    );
    for q in &store.queues {
        let _ = writeln!(
            out,
            "kurzdraht_outbox_depth{{peer=\"{}\"}} {}",
            label_value(&q.peer),
            q.depth
        );
    }
    header(
        out,
        "kurzdraht_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest message queued for a peer (0 when none is queued).",
    );
    for q in &store.queues {
        let _ = writeln!(
            out,
            "kurzdraht_outbox_oldest_age_seconds{{peer=\"{}\"}} {:.3}",
            label_value(&q.peer),
            q.oldest_age_seconds
        );
    }
}

/// The histogram of the time from submission to a verified receipt.
fn render_latency(out: &mut String, h: &Histogram) {
    let name = "kurzdraht_receipt_latency_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from submission to the peer's verified receipt.",
    );
    let mut cumulative = 0u64;
    for (le, count) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
        cumulative += count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += h.overflow.load(Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "{name}_sum {:.6}",
        h.sum_micros.load(Relaxed) as f64 / 1_000_000.0
    );
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// The store's size, the directory in force and its updates, the peers' reachability and
/// the certificate's time left.
fn render_store_and_peers(out: &mut String, m: &Metrics, store: &StoreGauges) {
    header(
        out,
        "kurzdraht_store_bytes",
        "gauge",
        "Size of the node's store on disk in bytes.",
    );
    if let Some(b) = store.store_bytes {
        let _ = writeln!(out, "kurzdraht_store_bytes {b}");
    }
    if let Some((version, fingerprint)) = &store.directory {
        header(
            out,
            "kurzdraht_directory_version",
            "gauge",
            "Version of the directory in force.",
        );
        let _ = writeln!(out, "kurzdraht_directory_version {version}");
        header(
            out,
            "kurzdraht_directory_info",
            "gauge",
            "The directory in force, by its fingerprint (SHA-256 of the file): the same on every node that runs it.",
        );
        let _ = writeln!(
            out,
            "kurzdraht_directory_info{{version=\"{version}\",fingerprint=\"{}\"}} 1",
            label_value(fingerprint)
        );
    }
    header(
        out,
        "kurzdraht_directory_updates_total",
        "counter",
        "Directory files looked at while running: a newer version taken, or refused (bad signature, not newer, needs a restart).",
    );
    let _ = writeln!(
        out,
        "kurzdraht_directory_updates_total{{outcome=\"taken\"}} {}",
        m.directories_taken.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "kurzdraht_directory_updates_total{{outcome=\"refused\"}} {}",
        m.directories_refused.load(Relaxed)
    );
    header(
        out,
        "kurzdraht_peer_reachable",
        "gauge",
        "1 if the last probe of the peer (mutual TLS and its health) succeeded, else 0.",
    );
    for (peer, reached) in &store.reachable {
        let _ = writeln!(
            out,
            "kurzdraht_peer_reachable{{peer=\"{}\"}} {}",
            label_value(peer),
            u8::from(*reached)
        );
    }
    if let Some(secs) = store.certificate_expiry_seconds {
        header(
            out,
            "kurzdraht_certificate_expiry_seconds",
            "gauge",
            "Seconds until the node's TLS certificate expires (renew it well before).",
        );
        let _ = writeln!(out, "kurzdraht_certificate_expiry_seconds {secs:.0}");
    }
}

/// The exposition of a running node.
pub fn render_node(node: &Node) -> String {
    render(node.metrics(), &StoreGauges::read(node))
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Metrics,
    NotFound,
    Malformed,
}

/// Classifies a request head (`METHOD TARGET HTTP/1.x`, headers ignored).
pub fn classify(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Malformed;
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads the request head (up to the blank line), at most [`MAX_REQUEST_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(Some(Vec::new())); // too long: answered as malformed
        }
    }
}

async fn serve_connection(node: Node, mut stream: TcpStream) -> std::io::Result<()> {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) | Err(_) => return Ok(()), // closed or too slow: nothing to answer
        Ok(Err(e)) => return Err(e),
    };
    let answer = match classify(&head) {
        // The store gauges count each peer's outbox: on a blocking thread.
        Request::Metrics => match tokio::task::spawn_blocking(move || render_node(&node)).await {
            Ok(text) => response("200 OK", CONTENT_TYPE, &text),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: rendering failed");
                response(
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "metrics could not be rendered\n",
                )
            }
        },
        Request::NotFound => response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at GET /metrics\n",
        ),
        Request::Malformed => response(
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n",
        ),
    };
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// Serves the metrics of `node` on `listener` until the node closes.
pub(crate) fn spawn_server(node: &Node, listener: TcpListener) -> JoinHandle<()> {
    let node = node.clone();
    let mut closing: watch::Receiver<bool> = node.closing();
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = closing.wait_for(|c| *c) => return,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = closing.wait_for(|c| *c) => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(node, stream).await {
                            tracing::debug!(error = %e, "metrics connection failed");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Binds the metrics listener at `addr` (the `metrics.listen` key).
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen {
            key: "metrics.listen",
            addr,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified() {
        assert_eq!(
            classify(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Request::Metrics
        );
        assert_eq!(classify(b"GET /metrics?x=1 HTTP/1.0"), Request::Metrics);
        assert_eq!(classify(b"GET / HTTP/1.1"), Request::NotFound);
        assert_eq!(classify(b"POST /metrics HTTP/1.1"), Request::NotFound);
        assert_eq!(classify(b"GET /metrics"), Request::Malformed);
        assert_eq!(classify(b"GET /metrics SPDY/3"), Request::Malformed);
        assert_eq!(classify(b""), Request::Malformed);
        assert_eq!(classify(&[0xff, 0xfe]), Request::Malformed);
    }

    #[test]
    fn exposition_has_counters_refusals_histogram_and_gauges() {
        let m = Metrics::default();
        m.submitted();
        m.delivered(Some(1_000), 1_040);
        m.delivered(Some(0), 100_000_000);
        m.retried();
        m.received();
        m.duplicate();
        m.refused("no-consent");
        m.refused("no-consent");
        m.refused("odd\"code");
        let store = StoreGauges {
            queues: vec![PeerQueue {
                peer: "jugendamt-norderstedt".into(),
                depth: 3,
                oldest_age_seconds: 1.5,
            }],
            store_bytes: Some(4096),
            directory: Some((7, "ab12".into())),
            reachable: vec![("jugendamt-norderstedt".into(), false)],
            certificate_expiry_seconds: Some(86_400.0),
        };
        m.directory_update(true);
        m.directory_update(false);
        m.directory_update(false);
        let text = render(&m, &store);
        for line in [
            "kurzdraht_submissions_total 1",
            "kurzdraht_deliveries_total 2",
            "kurzdraht_refusals_total{reason=\"no-consent\"} 2",
            "kurzdraht_refusals_total{reason=\"odd\\\"code\"} 1",
            "kurzdraht_delivery_retries_total 1",
            "kurzdraht_received_total 1",
            "kurzdraht_duplicates_total 1",
            "kurzdraht_outbox_depth{peer=\"jugendamt-norderstedt\"} 3",
            "kurzdraht_outbox_oldest_age_seconds{peer=\"jugendamt-norderstedt\"} 1.500",
            "kurzdraht_receipt_latency_seconds_bucket{le=\"0.025\"} 0",
            "kurzdraht_receipt_latency_seconds_bucket{le=\"0.05\"} 1",
            "kurzdraht_receipt_latency_seconds_bucket{le=\"86400\"} 1",
            "kurzdraht_receipt_latency_seconds_bucket{le=\"+Inf\"} 2",
            "kurzdraht_receipt_latency_seconds_count 2",
            "kurzdraht_receipt_latency_seconds_sum 100000.040000",
            "kurzdraht_store_bytes 4096",
            "# TYPE kurzdraht_receipt_latency_seconds histogram",
            "kurzdraht_directory_version 7",
            "kurzdraht_directory_info{version=\"7\",fingerprint=\"ab12\"} 1",
            "kurzdraht_directory_updates_total{outcome=\"taken\"} 1",
            "kurzdraht_directory_updates_total{outcome=\"refused\"} 2",
            "kurzdraht_peer_reachable{peer=\"jugendamt-norderstedt\"} 0",
            "kurzdraht_certificate_expiry_seconds 86400",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
