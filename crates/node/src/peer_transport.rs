//! How a delivery worker reaches a peer: the [`PeerTransport`] it sends through. In a node
//! that is [`GrpcTransport`] — PeerExchange over mutual TLS, one lazily connected HTTP/2
//! connection per peer shared by that peer's lane workers, connected anew whenever a newer
//! directory is in force (it may move the peer's endpoint or revoke the peer's certificate:
//! the new handshake checks the certificate against it, and the old connection closes once
//! its last call is answered). Tests drive the real worker through a transport of
//! their own (e.g. straight into another node's reception).

use crate::{shared::Shared, tls, NodeError};
use kurzdraht_proto::v1::{
    peer_exchange_client::PeerExchangeClient, BatchOutcome, EnvelopeBatch, FetchDeliveredRequest,
    FetchDeliveredResponse, ListDeliveredRequest, ListDeliveredResponse, ListReceivedRequest,
    ListReceivedResponse, SignedEnvelope, SignedReceipt,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// How long connecting to a peer (TCP) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The two calls of PeerExchange a delivery worker makes.
#[tonic::async_trait]
pub trait PeerTransport: Send + Sync {
    /// Delivers a batch; one outcome per envelope, in order.
    async fn deliver_batch(&self, batch: EnvelopeBatch) -> Result<BatchOutcome, Status>;
    /// Delivers one envelope (to a peer that does not know DeliverBatch).
    async fn deliver(&self, envelope: SignedEnvelope) -> Result<SignedReceipt, Status>;
}

/// PeerExchange over mutual TLS to one peer, connected on first use.
pub struct GrpcTransport {
    node: Shared,
    peer: String,
    /// The client and the directory version it was made under.
    client: Mutex<Option<(u64, PeerExchangeClient<Channel>)>>,
}

impl GrpcTransport {
    pub fn new(node: Shared, peer: &str) -> Arc<Self> {
        Arc::new(Self {
            node,
            peer: peer.to_string(),
            client: Mutex::new(None),
        })
    }

    fn client(&self) -> Result<PeerExchangeClient<Channel>, NodeError> {
        // A worker that panicked while holding it left nothing half-done: the slot holds a
        // client or none.
        let mut shared = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let directory = self.node.directory();
        let agency = directory
            .get(&self.peer)
            .ok_or_else(|| NodeError::config("directory", format!("{} vanished", self.peer)))?;
        if let Some((version, c)) = shared.as_ref() {
            if *version == directory.version() {
                return Ok(c.clone());
            }
        }
        let settings = self.node.delivery_settings();
        let endpoint = Endpoint::from_shared(agency.endpoint.clone())
            .map_err(|e| NodeError::config("directory.endpoint", e.to_string()))?;
        let channel = tls::peer_endpoint(
            endpoint,
            self.node.tls(),
            &self.peer,
            Arc::new(self.node.clone()),
        )?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(settings.request_timeout)
        .connect_lazy();
        let client = PeerExchangeClient::new(channel);
        *shared = Some((directory.version(), client.clone()));
        Ok(client)
    }
}

impl GrpcTransport {
    /// Reconciliation: one page of what the peer delivered to this node.
    pub async fn list_delivered(
        &self,
        req: ListDeliveredRequest,
    ) -> Result<ListDeliveredResponse, Status> {
        let mut client = self.client()?;
        Ok(client.list_delivered(req).await?.into_inner())
    }

    /// Reconciliation: the kept envelopes of deliveries the peer made to this node.
    pub async fn fetch_delivered(
        &self,
        req: FetchDeliveredRequest,
    ) -> Result<FetchDeliveredResponse, Status> {
        let mut client = self.client()?;
        Ok(client.fetch_delivered(req).await?.into_inner())
    }

    /// Reconciliation: one page of what the peer received from this node.
    pub async fn list_received(
        &self,
        req: ListReceivedRequest,
    ) -> Result<ListReceivedResponse, Status> {
        let mut client = self.client()?;
        Ok(client.list_received(req).await?.into_inner())
    }
}

#[tonic::async_trait]
impl PeerTransport for GrpcTransport {
    async fn deliver_batch(&self, batch: EnvelopeBatch) -> Result<BatchOutcome, Status> {
        let mut client = self.client()?;
        Ok(client.deliver_batch(batch).await?.into_inner())
    }

    async fn deliver(&self, envelope: SignedEnvelope) -> Result<SignedReceipt, Status> {
        let mut client = self.client()?;
        Ok(client.deliver(envelope).await?.into_inner())
    }
}
