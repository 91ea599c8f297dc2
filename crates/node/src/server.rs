//! Running a node: both gRPC listeners (PeerExchange with mutual TLS, AgencyApi with TLS and
//! tokens), the optional metrics listener (plain HTTP), the delivery workers, the directory
//! watcher and the peer prober, until a shutdown signal. Takes bound listeners, so that tests and the demo bind port 0 and
//! production binds the configured addresses.

use crate::rpc::{agency_api, connection_limits, health, peer_exchange, transport_refusals};
use crate::service::delivery;
use crate::{
    config::NodeConfig, directory_update, metrics, node::Node, reachability, tls, NodeError,
};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The node's bound listeners.
pub struct Listeners {
    pub peer: TcpListener,
    pub api: TcpListener,
    /// Prometheus metrics over plain HTTP; `None`: no metrics listener.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &NodeConfig) -> Result<Self, NodeError> {
        let bind = |addr: SocketAddr, key: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen { key, addr, source })
        };
        Ok(Self {
            peer: bind(config.peer_addr, "listen.peer").await?,
            api: bind(config.api_addr, "listen.api").await?,
            metrics: match config.metrics_addr {
                Some(addr) => Some(metrics::bind(addr).await?),
                None => None,
            },
        })
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames go out at once
/// instead of waiting up to 40 ms for an acknowledgement.
fn without_nagle(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Opens the node of `config` and serves until `shutdown` completes, then stops accepting,
/// lets in-flight calls and deliveries finish, flushes the store and returns.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let node = Node::open(&config)?;
    serve(node, config, listeners, shutdown).await
}

/// [`run`] for a node already opened (with the clock of the caller's choice).
pub async fn serve(
    node: Node,
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let closing = node.closing();
    let directory = node.directory();
    tracing::info!(
        agency = node.agency(),
        version = directory.version(),
        fingerprint = %directory.fingerprint(),
        file = %config.directory_file.display(),
        signing_key = %config.signing_key.verifying_key().to_hex(),
        "directory in force (compare the fingerprint with the other agencies')"
    );
    let mut workers = delivery::spawn_workers(&node, closing.clone());
    workers.push(node.retention().spawn());
    workers.push(directory_update::spawn_watcher(
        &node,
        directory_update::Source {
            file: config.directory_file.clone(),
            operator_key: config.operator_key,
            data_dir: config.data_dir.clone(),
        },
        config.directory_poll,
    ));
    if let Some(every) = config.delivery.peer_probe {
        workers.push(reachability::spawn_prober(&node, every));
    }
    workers.extend(node.reconciliation().spawn_pending());
    let until_closed = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|c| *c).await;
    };
    let (reporter, health_service) = health::health_service();
    // Health on the peer port too (behind its mutual TLS): what a peer's probe asks.
    let peer = connection_limits::server(&config.peer_port)
        .layer(transport_refusals::layer())
        .tls_config(tls::peer_server_tls(&config.tls))?
        .add_service(peer_exchange::service(node.clone()))
        .add_service(health_service.clone())
        .serve_with_incoming_shutdown(
            connection_limits::bounded(without_nagle(listeners.peer), config.peer_port.connections),
            until_closed(closing.clone()),
        );
    workers.push(health::spawn_health(
        &node,
        reporter,
        Duration::from_secs(5),
    ));
    let (reflection_v1, reflection_v1alpha) = health::reflection_services()?;
    let api = connection_limits::server(&config.api_port)
        .layer(transport_refusals::layer())
        .tls_config(tls::api_server_tls(&config.tls))?
        .add_service(agency_api::service(node.clone(), config.api_tokens.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            connection_limits::bounded(without_nagle(listeners.api), config.api_port.connections),
            until_closed(closing.clone()),
        );
    if let Some(listener) = listeners.metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(agency = node.agency(), metrics = %addr, "metrics served over plain HTTP");
        }
        workers.push(metrics::spawn_server(&node, listener));
    }
    let peer = tokio::spawn(peer);
    let api = tokio::spawn(api);
    tracing::info!(agency = node.agency(), peer = %config.peer_addr, api = %config.api_addr, "node serving");
    shutdown.await;
    tracing::info!(agency = node.agency(), "shutting down");
    node.close();
    let mut result = Ok(());
    for server in [peer, api] {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(NodeError::from(e)),
            Err(e) => result = Err(NodeError::Task(format!("a listener's server task: {e}"))),
        }
    }
    for w in workers {
        let _ = w.await;
    }
    node.ledger().flush().await?;
    tracing::info!(agency = node.agency(), "stopped");
    result
}
