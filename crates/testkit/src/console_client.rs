//! An HTTPS client of a node's console, for tests that look at what the server answers —
//! status, headers, cookies, the HTML — below what a browser shows: hyper's own HTTP/1.1
//! client over rustls, verifying the console's certificate with the federation's CA and the
//! agency's name, keeping cookies like a browser (per client, `Max-Age=0` removes one).
//! It follows no redirects; a test sees each 303. Each request opens its own connection
//! (TCP + TLS + HTTP/1.1 handshake) unless [`ConsoleClient::keep_alive`] is set: then one
//! connection is reused while the server keeps it open, as a browser does.

use crate::LocalFederation;
use http::{header, HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// One answer of the console.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        self.headers.get(header::LOCATION)?.to_str().ok()
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    /// The value of the first form field `name="…"` with a `value` (a hidden field).
    pub fn field(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\""))?;
        let rest = &self.body[at..];
        let v = rest.find("value=\"")? + "value=\"".len();
        let end = rest[v..].find('"')?;
        Some(rest[v..v + end].to_string())
    }
}

/// A client of one console, with its cookie jar.
pub struct ConsoleClient {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    cookies: BTreeMap<String, String>,
    /// Sent as `Sec-Fetch-Site` when set.
    pub fetch_site: Option<String>,
    /// Reuse one connection for the requests (HTTP/1.1 keep-alive).
    pub keep_alive: bool,
    connection: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl ConsoleClient {
    /// A client of `agency`'s console in `fed`, trusting only the federation's CA and
    /// expecting the agency's name in the certificate.
    pub fn of(fed: &LocalFederation, agency: &str) -> Self {
        let config = fed.config(agency).expect("node config");
        let url = fed.console_url(agency).expect("console url");
        let addr: SocketAddr = url
            .trim_start_matches("https://")
            .parse()
            .expect("console address");
        Self::new(addr, agency, &config.tls.ca_pem)
    }

    pub fn new(addr: SocketAddr, agency: &str, ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA pem")).expect("CA certificate");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            addr,
            server_name: ServerName::try_from(agency.to_string()).expect("agency as a name"),
            tls: Arc::new(tls),
            cookies: BTreeMap::new(),
            fetch_site: None,
            keep_alive: false,
            connection: None,
        }
    }

    /// The cookie `name` as held now.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Sets (or replaces) a cookie by hand.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.into(), value.into());
    }

    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.request(Method::GET, path, None).await
    }

    /// A form POST with `fields` (url-encoded).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).expect("form");
        self.request(Method::POST, path, Some(body)).await
    }

    /// Signs in with the login form (fetching it first for its CSRF token).
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/anmelden").await;
        let csrf = form.field("csrf").unwrap_or_default();
        self.post(
            "/anmelden",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// A `multipart/form-data` POST: `fields` as text parts, then `files` as file parts
    /// (field name, file name, bytes), as a browser sends a form with a file input.
    pub async fn post_multipart(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Page {
        let boundary = "kurzdraht-test-boundary-7d1f0c2a9b";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        for (name, file_name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.send(Method::POST, path, Some((content_type, body)))
            .await
    }

    pub async fn request(&mut self, method: Method, path: &str, body: Option<String>) -> Page {
        self.send(method, path, form_body(body)).await
    }

    /// Sends one request with an optional body of a content type; keeps the cookies set.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> Page {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new connection to the console: TCP, TLS, the HTTP/1.1 handshake.
    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to the console: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with the console: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// [`ConsoleClient::request`] with its failures (connect, TLS, the answer) as an error
    /// instead of a panic — for callers that wait for a console to come up, or measure it.
    pub async fn try_request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Page, String> {
        self.try_send(method, path, form_body(body)).await
    }

    /// [`ConsoleClient::send`] with its failures as an error instead of a panic.
    pub async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Page, String> {
        let mut reusable = None;
        if let Some(mut c) = self.connection.take().filter(|_| self.keep_alive) {
            if c.ready().await.is_ok() {
                reusable = Some(c);
            }
        }
        let mut sender = match reusable {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header(header::COOKIE, jar.join("; "));
        }
        if let Some(site) = &self.fetch_site {
            request = request.header("sec-fetch-site", site.as_str());
        }
        let request = match body {
            Some((content_type, b)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(b))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("console answer: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("console body: {e}"))?
            .to_bytes();
        if self.keep_alive {
            self.connection = Some(sender);
        }
        let page = Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for c in page.set_cookies() {
            let first = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = first.split_once('=') {
                if c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(page)
    }
}

/// A url-encoded form's body with its content type.
fn form_body(body: Option<String>) -> Option<(String, Vec<u8>)> {
    body.map(|b| {
        (
            "application/x-www-form-urlencoded".to_string(),
            b.into_bytes(),
        )
    })
}
