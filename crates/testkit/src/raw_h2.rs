//! A raw HTTP/2 client over TLS for the load tests: it writes frames by hand, so it can do
//! what a well-behaved client library never does — open more streams than the server
//! allows, send header blocks larger than the server accepts, leave pings unanswered — and
//! it reports the frames the server answers with (RST_STREAM codes, GOAWAY, the first byte
//! of each response header block, whether the connection closed).
//!
//! Header blocks are HPACK literals without indexing or Huffman coding (any decoder reads
//! them); the server's header blocks are not decoded (hyper Huffman-codes them), except
//! that `:status 200` is always the single byte `0x88` (static table entry 8).

use kurzdraht_node::config::TlsMaterial;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// RST_STREAM / GOAWAY error codes (RFC 9113 §7).
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A client configuration presenting `tls`'s certificate (a peer's identity), trusting the
/// federation CA.
pub fn peer_client_config(tls: &TlsMaterial) -> Arc<rustls::ClientConfig> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).expect("key PEM");
    let config = builder(&tls.ca_pem)
        .with_client_auth_cert(certs, key)
        .expect("client identity");
    finish(config)
}

/// A client configuration without a client certificate (the AgencyApi's TLS).
pub fn api_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    finish(builder(ca_pem).with_no_client_auth())
}

fn builder(
    ca_pem: &str,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("CA PEM")).expect("CA certificate");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
}

fn finish(mut config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects with TLS to `addr`, whose certificate must name `server_name`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// What the server did with one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSeen {
    /// The first byte of each response header block (0x88: `:status 200`).
    pub header_blocks: Vec<u8>,
    /// The server ended its side (END_STREAM).
    pub ended: bool,
    /// RST_STREAM with this code.
    pub reset: Option<u32>,
}

/// Everything the server sent, as far as the tests look at it.
#[derive(Debug, Default)]
pub struct Seen {
    pub streams: BTreeMap<u32, StreamSeen>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, once received.
    pub max_concurrent_streams: Option<u32>,
    /// The server's SETTINGS_MAX_HEADER_LIST_SIZE, once received.
    pub max_header_list_size: Option<u32>,
    pub settings_received: bool,
    /// GOAWAY: last stream id and error code.
    pub goaway: Option<(u32, u32)>,
    pub pings_received: usize,
    /// The connection ended (EOF or error).
    pub closed: bool,
}

impl Seen {
    /// Streams reset with `code`.
    pub fn resets(&self, code: u32) -> usize {
        self.streams
            .values()
            .filter(|s| s.reset == Some(code))
            .count()
    }
}

/// One raw HTTP/2 connection. The reader task answers SETTINGS (always) and PING (if
/// `answer_pings`) and records what arrives in [`RawH2::seen`].
pub struct RawH2 {
    writer: Arc<tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>>,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    next_stream: u32,
    reader: tokio::task::JoinHandle<()>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix.
fn hpack_int(value: usize, n: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literals without indexing (new names), no Huffman coding.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(name.len(), 7, 0, &mut out);
        out.extend_from_slice(name.as_bytes());
        hpack_int(value.len(), 7, 0, &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The header block of a gRPC call of `path` to `authority`, with `extra` headers.
pub fn grpc_request(path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    headers.extend_from_slice(extra);
    header_block(&headers)
}

impl RawH2 {
    /// Sends the connection preface and empty SETTINGS, and waits for the server's SETTINGS
    /// (acknowledged at once, so its limits apply to every frame sent after this returns).
    pub async fn start(tls: TlsStream<TcpStream>, answer_pings: bool) -> Self {
        let (read, mut write) = tokio::io::split(tls);
        write
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        write
            .write_all(&frame(SETTINGS, 0, 0, &[]))
            .await
            .expect("SETTINGS");
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let reader = tokio::spawn(read_frames(
            read,
            writer.clone(),
            seen.clone(),
            changed.clone(),
            answer_pings,
        ));
        let raw = Self {
            writer,
            seen,
            changed,
            next_stream: 1,
            reader,
        };
        raw.wait_for("the server's SETTINGS", |s| s.settings_received)
            .await;
        raw
    }

    /// A snapshot of what the server sent so far.
    pub fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.seen.lock().unwrap())
    }

    /// Waits (at most 30 s, else panics) until `done` holds for what the server sent.
    pub async fn wait_for(&self, what: &str, mut done: impl FnMut(&Seen) -> bool) {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                panic!(
                    "waited 30 s for {what}; the server sent: {:?}",
                    self.seen.lock().unwrap()
                );
            }
        }
    }

    async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        w.flush().await
    }

    /// Opens a stream with `block` as its (single-frame) header block, without ending it;
    /// returns its id.
    pub async fn open(&mut self, block: &[u8]) -> std::io::Result<u32> {
        let id = self.next_stream;
        self.next_stream += 2;
        self.send(&frame(HEADERS, END_HEADERS, id, block)).await?;
        Ok(id)
    }

    /// Opens `n` streams with the same header block in one write; returns their ids.
    pub async fn open_many(&mut self, n: usize, block: &[u8]) -> std::io::Result<Vec<u32>> {
        let mut bytes = Vec::new();
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.next_stream;
            self.next_stream += 2;
            bytes.extend_from_slice(&frame(HEADERS, END_HEADERS, id, block));
            ids.push(id);
        }
        self.send(&bytes).await?;
        Ok(ids)
    }

    /// Sends `data` on `stream` (one DATA frame; within the windows the server granted,
    /// which the caller keeps small), ending the stream if `end`.
    pub async fn data(&self, stream: u32, data: &[u8], end: bool) -> std::io::Result<()> {
        let flags = if end { END_STREAM } else { 0 };
        self.send(&frame(DATA, flags, stream, data)).await
    }

    /// Sends a gRPC message (5-byte prefix + `message`) on `stream` and ends it.
    pub async fn grpc_message(&self, stream: u32, message: &[u8]) -> std::io::Result<()> {
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        self.data(stream, &body, true).await
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_frames(
    mut read: ReadHalf<TlsStream<TcpStream>>,
    writer: Arc<tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>>,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    answer_pings: bool,
) {
    let mut head = [0u8; 9];
    loop {
        if read.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut reply = None;
        {
            let mut s = seen.lock().unwrap();
            match kind {
                DATA => {
                    if flags & END_STREAM != 0 {
                        s.streams.entry(stream).or_default().ended = true;
                    }
                    if len > 0 {
                        // Give the window back, for the connection and the stream.
                        let inc = (len as u32).to_be_bytes();
                        let mut r = frame(WINDOW_UPDATE, 0, 0, &inc);
                        r.extend_from_slice(&frame(WINDOW_UPDATE, 0, stream, &inc));
                        reply = Some(r);
                    }
                }
                HEADERS => {
                    let mut at = 0;
                    if flags & PADDED != 0 {
                        at += 1;
                    }
                    if flags & PRIORITY != 0 {
                        at += 5;
                    }
                    let st = s.streams.entry(stream).or_default();
                    st.header_blocks.push(payload.get(at).copied().unwrap_or(0));
                    if flags & END_STREAM != 0 {
                        st.ended = true;
                    }
                }
                RST_STREAM => {
                    let code = payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    s.streams.entry(stream).or_default().reset = Some(code);
                }
                SETTINGS if flags & ACK == 0 => {
                    for entry in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                        match id {
                            0x3 => s.max_concurrent_streams = Some(value),
                            0x6 => s.max_header_list_size = Some(value),
                            _ => {}
                        }
                    }
                    s.settings_received = true;
                    reply = Some(frame(SETTINGS, ACK, 0, &[]));
                }
                PING if flags & ACK == 0 => {
                    s.pings_received += 1;
                    if answer_pings {
                        reply = Some(frame(PING, ACK, 0, &payload));
                    }
                }
                GOAWAY => {
                    let word = |i: usize| {
                        payload
                            .get(i..i + 4)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0)
                    };
                    s.goaway = Some((word(0) & 0x7fff_ffff, word(4)));
                }
                _ => {}
            }
        }
        changed.notify_waiters();
        if let Some(bytes) = reply {
            let mut w = writer.lock().await;
            if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                break;
            }
        }
    }
    seen.lock().unwrap().closed = true;
    changed.notify_waiters();
}
