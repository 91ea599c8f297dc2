//! The console's listener: TLS with the node's own certificate and key (rustls with ring,
//! HTTP/2 and HTTP/1.1 by ALPN), bounded — at most [`ListenerLimits::connections`]
//! connections at once, a handshake and a request head within [`ListenerLimits::handshake`],
//! at most 32 streams per HTTP/2 connection. Serves until the node begins to close, then
//! drops its connections (each holds the node; a node reopened in the same process must find
//! its store free).

use crate::ConsoleError;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use kurzdraht_node::config::TlsMaterial;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The address a request came from (for the login throttle).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub connections: usize,
    pub handshake: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            connections: 256,
            handshake: Duration::from_secs(10),
        }
    }
}

/// The TLS configuration of the console: the node's certificate, no client certificates.
pub fn server_tls(m: &TlsMaterial) -> Result<rustls::ServerConfig, ConsoleError> {
    let certs = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConsoleError::Tls(format!("the node's certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|e| ConsoleError::Tls(format!("the node's key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConsoleError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ConsoleError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Until the node begins to close (the guard of the watched value is not held across an
/// await, so the future stays `Send`).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Serves `router` on `listener` until `closing` turns true.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    limits: ListenerLimits,
    mut closing: watch::Receiver<bool>,
) -> Result<(), ConsoleError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = closed(&mut closing) => return Ok(()),
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = closed(&mut closing) => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = async {
                let tls =
                    match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        _ => return,
                    };
                let service = hyper::service::service_fn(
                    move |mut request: Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ClientAddr(addr));
                        router.clone().oneshot(request)
                    },
                );
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.handshake);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(32)
                    .max_header_list_size(64 * 1024);
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            };
            tokio::select! {
                _ = connection => {}
                _ = closed(&mut closing) => {}
            }
        });
    }
}
